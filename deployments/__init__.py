"""Operations: work pools, deployments, failure notifications, and a local server with workers.

Modules: `pools` (the two work pools and their limits), `deploy` (deployment
specs and `deploy_all`), `notifications` (webhook messages on failures),
`local` (`up` / `down` on this machine). ECS job templates for the same
pools live in `deployments/aws/`.
"""
