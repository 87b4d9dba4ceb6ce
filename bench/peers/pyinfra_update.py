"""The same job as `mlfleet deploy --tag TAG` on a CPU fleet, as a pyinfra user writes it:
pull the image, replace the container (pyinfra's docker operations run the docker CLI on
the host), then wait until the engine reports it healthy (plain shell: pyinfra has no wait).

    MLFLEET_BENCH_INVENTORY=inv.yml pyinfra -y --parallel N bench/peers/pyinfra_inventory.py \
        bench/peers/pyinfra_update.py --data tag=v3

What it does not do (mlfleet does): variant selection, an inference check, a watch window,
rollback, a cron agent, a record of the deployment.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.operations import docker, server

PROBE = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"
image = f"{host.data.mlfleet_registry}/mlfleet-lab/sentiment:{host.data.tag}-cpu"

docker.image(name="Pull the image from the registry", image=image)

# pyinfra 3 does not compare a container with its spec: `force=True` replaces it (rm -f,
# create, start), which is what an update needs.
docker.container(
    name="Replace the container",
    container="sentiment",
    image=image,
    force=True,
    ports=["8080:8080"],
    volumes=[f"{host.data.model_data_dir}:/data:ro"],
    restart_policy="unless-stopped",
    extra_args=[
        "--security-opt", "no-new-privileges",
        "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
        "--health-cmd", f'python3 -c "{PROBE}"',
        "--health-interval", "500ms", "--health-timeout", "2s",
        "--health-retries", "3", "--health-start-period", "3s",
    ],
)  # fmt: skip

server.shell(
    name="Wait until it is healthy",
    commands=[
        "for i in $(seq 300); do"
        ' s=$(docker inspect -f "{{.State.Health.Status}}" sentiment);'
        ' [ "$s" = healthy ] && exit 0; [ "$s" = unhealthy ] && break; sleep 0.2;'
        " done; echo not healthy: $s >&2; exit 1"
    ],
)
