"""Prefect flows of daqflow, importable from notebooks and deployments."""

from flows._runtime import configure_environment

configure_environment()
