"""Bring a recorded release back when its container is gone (removed by hand, pruned, an
engine whose data root was lost): recreate the container from the release's own record (its
desired state, variant and image, pulled again by digest when the image is gone too), with
the GPU wiring the host's facts allow now, and prove it with the release's own checks. No
release row is invented: the release is the one the host was told to run.

What may not be repaired is refused with the cause (`RepairFailed`): the variant no longer
fits the host (its GPU is gone: a CUDA image is never started on a host without one), a
mount source vanished, the image is in no registry the host reaches (`waiting`: the next
ticks try again)."""

from __future__ import annotations

from typing import Optional

from mlfleet.agent import health
from mlfleet.agent.desired import DesiredState
from mlfleet.agent.engine_api import EngineError, EngineUnreachable
from mlfleet.agent.host import (
    AgentHost,
    MissingInput,
    create_container,
    health_target,
    read_inputs,
    serve_after_reboot,
)
from mlfleet.agent.imageref import ImageRef
from mlfleet.agent.protocol import EventKind
from mlfleet.agent.selection import select_variant
from mlfleet.agent.state import Release
from mlfleet.agent.variants import Variant

# Words in a failed pull that mean the registry was not reached (as opposed to refusing).
_UNREACHED = ("connection refused", "no such host", "i/o timeout", "timeout", "dial tcp",
              "network is unreachable", "no route to host", "tls handshake")  # fmt: skip


class RepairFailed(Exception):
    """The release cannot be brought back now. `waiting`: only because something outside
    the host is away (its registry, its engine), so trying again later may work."""

    def __init__(self, reason: str, waiting: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.waiting = waiting


def recreate(host: AgentHost, release: Release) -> health.Verdict:
    """Create and start the release's container again from its record and wait until it
    is healthy; the release's record then names the new container. RepairFailed when it
    cannot even be started."""
    desired = DesiredState.from_dict(release.spec)
    variant = _variant(desired, release)
    facts = host.facts()
    if not facts.docker or not facts.docker.reachable:
        raise RepairFailed("the Docker engine does not answer", waiting=True)
    fits = select_variant([variant], facts)
    if fits.variant is None:
        reasons = "; ".join(r.reason for r in fits.rejected)
        raise RepairFailed(f"variant {variant.name} no longer fits this host: {reasons}")
    try:
        env_file = read_inputs(desired)
    except MissingInput as exc:
        raise RepairFailed(str(exc)) from None
    image = release.image or variant.image or ""
    ensure_image(host, image, release.digest)
    name = release.container_name or f"{release.app}.r{release.id}"
    host.engine.container_remove(name, force=True)  # a stale one of that name, if any
    try:
        container_id = create_container(host, desired, variant, release.id, name, image,
                                        desired.container.user, env_file, facts.docker.gpu_support)  # fmt: skip
        release.container_id, release.container_name = container_id, name
        host.engine.container_start(container_id)
    except EngineError as exc:
        raise RepairFailed(f"the engine refused to start {name}: {exc.message}") from None
    host.say(EventKind.STARTED, f"recreated {name} ({release.tag})", release.app)
    info = host.engine.container_inspect(container_id) or {}
    verdict = health.wait_healthy(
        health_target(host, desired, container_id, info), desired.health, host.report
    )
    if verdict.ok:
        serve_after_reboot(host, container_id)
    return verdict


def _variant(desired: DesiredState, release: Release) -> Variant:
    for variant in desired.parsed_variants():
        if variant.name == release.variant:
            return variant
    raise RepairFailed(f"the record of {release.tag} names no variant {release.variant!r}")


def ensure_image(host: AgentHost, image: str, digest: Optional[str]) -> None:
    """The image is on the engine: it is there, or it is pulled again, by its digest when
    the record has one (the tag may have moved since), then tagged under its name."""
    if host.engine.image_inspect(image) is not None:
        return
    source = digest if digest and "@" in digest else image
    name, reference = ImageRef.parse(source).engine_name_and_tag()
    host.say(EventKind.PULL, f"pulling {source} again (the image was gone)")
    try:
        for _ in host.engine.pull(name, reference):
            pass
    except EngineUnreachable as exc:
        raise RepairFailed(str(exc), waiting=True) from None
    except EngineError as exc:
        registry = ImageRef.parse(source).registry_address
        if any(word in exc.message.lower() for word in _UNREACHED):
            raise RepairFailed(
                f"waiting for registry {registry} to pull {source} again ({exc.message}); a host"
                " that reaches no registry needs the controller: mlfleet deploy",
                waiting=True,
            ) from None
        raise RepairFailed(f"{source} could not be pulled again: {exc.message}") from None
    if source != image:
        host.engine.image_tag(source, *ImageRef.parse(image).engine_name_and_tag())
