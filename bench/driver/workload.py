"""The objects a run applies, and the fastest any operator could make them Ready."""

from __future__ import annotations

from .world import DOMAIN, HSMS, KEYS_PER_HSM, NAMESPACES, TENANT

# Fewest sequential remote round trips for one object (each pays the injected latency once): the
# application ID from Antimatter (authenticate -> providers.list) -> Graph service principal lookup
# -> create -> role assignment PUT -> pairing check, which in the sandbox is itself 1 + token +
# key.get + key.wrap + key.unwrap. The Entra tokens, key read and tag, and the registration can all
# run beside that chain.
CRITICAL_PATH_CALLS = 10
API_KEY_SECRET = "antimatter-api-key"


def namespaces() -> list[str]:
    return [f"bench-{i}" for i in range(NAMESPACES)]


def plan(n) -> list[dict]:
    """Object i: HSM i%5, namespace i%10; even slots an existing key, odd slots a new one."""
    out = []
    for i in range(n):
        h, slot = i % HSMS, i // HSMS
        if slot % 2 == 0:
            k = slot // 2
            assert k < KEYS_PER_HSM, "the bench world has too few pre-existing keys"
            key, create = f"pre-{k:05d}", ("Never" if k % 2 == 0 else "IfMissing")
        else:
            key, create = f"new-{slot // 2:05d}", "IfMissing"
        out.append(
            {
                "name": f"ark-{i:05d}",
                "ns": f"bench-{i % NAMESPACES}",
                "hsm": f"bench-hsm-{h}",
                "key": key,
                "create": create,
                "new": create == "IfMissing" and key.startswith("new-"),
            }
        )
    return out


def probes(n, count) -> list[dict]:
    """Objects beyond the first n, each on a key of its own that it creates (the world's existing
    keys are all taken at N = 10,000)."""
    return [
        {
            "name": f"ark-{n + i:05d}",
            "ns": f"bench-{(n + i) % NAMESPACES}",
            "hsm": f"bench-hsm-{i % HSMS}",
            "key": f"probe-{i:05d}",
            "create": "IfMissing",
            "new": True,
        }
        for i in range(count)
    ]


def floor_seconds(objs, throttled, latency_ms) -> float | None:
    """Throttled: per HSM max(creates ÷ 1/s, role assignments ÷ 5/s), slowest HSM. One object: the
    critical path × latency. Unthrottled N>1: no floor is defined (None)."""
    if len(objs) == 1:
        return CRITICAL_PATH_CALLS * latency_ms / 1000.0
    if not throttled:
        return None
    per = {}
    for o in objs:
        c, r = per.get(o["hsm"], (0, 0))
        per[o["hsm"]] = (c + (1 if o["new"] else 0), r + 1)
    return max(max(c / 1.0, r / 5.0) for c, r in per.values())


def manifest(o, endpoints, check_interval) -> dict:
    antimatter = {"apiUrl": endpoints["antimatter_url"], "apiKeySecretRef": {"name": API_KEY_SECRET}, "activate": False}
    spec = {
        "domainId": DOMAIN,
        "tenantId": TENANT,
        "hsm": {"name": o["hsm"]},
        "key": {"name": o["key"], "create": o["create"]},
        "antimatter": antimatter,
    }
    if check_interval:
        spec["checkInterval"] = check_interval
    return {
        "apiVersion": "antimatter.io/v1alpha1",
        "kind": "AzureRootKey",
        "metadata": {"name": o["name"], "namespace": o["ns"]},
        "spec": spec,
    }
