"""Kubernetes access for the driver: the official Python client (kubectl for the CRD).

Lists and the watch read raw JSON (`_preload_content=False`, `deserialize=False`): the generated
models are not needed, and decoding 20,000 watch events or 40,000 Events into them costs driver
CPU that the operator and the API server share on the benchmark machine. Measured against a
local stream of 20,000 MODIFIED events (2 KB AzureRootKeys) the raw watch takes 17-29 us of driver
CPU per event (about 20,000 events/s), the model-decoding one 55-77 us; a 10,000-object run needs
a few hundred events/s.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess

import urllib3
from kubernetes import client, config, watch

from .config import CRD

GROUP, VERSION, PLURAL = "antimatter.io", "v1alpha1", "azurerootkeys"
PAGE = 2000


class Kube:
    def __init__(self, kubeconfig: pathlib.Path, tools_dir: pathlib.Path, threads: int):
        self.kubeconfig, self.kubectl = kubeconfig, tools_dir / "kubectl"
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        # One pooled connection per concurrent caller (the appliers and the watch).
        cfg.connection_pool_maxsize = threads + 2
        # The API server sheds load with 429 and may briefly answer 5xx while it settles.
        cfg.retries = urllib3.Retry(
            total=5, backoff_factor=0.2, status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None
        )
        api = self.api = client.ApiClient(cfg)
        # Probes of an API server that may be down answer at once: no retries, a short timeout.
        bare = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=bare)
        bare.retries = False
        self.bare = client.ApiClient(bare)
        self.leases = client.CoordinationV1Api(self.bare)
        self.core = client.CoreV1Api(api)
        self.events = client.EventsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def install_crd(self):
        """Applies the AzureRootKey CRD and waits until it is established and served."""
        kubectl = [str(self.kubectl), "--kubeconfig", str(self.kubeconfig)]
        apply = ["apply", "--server-side", "-f", str(CRD)]
        subprocess.run([*kubectl, *apply], check=True, capture_output=True, timeout=60)
        wait = ["wait", "--for", "condition=established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s"]
        subprocess.run([*kubectl, *wait], check=True, capture_output=True, timeout=90)

    def root_keys_served(self) -> bool:
        """The CRD's REST mapping may lag `established` by a moment."""
        try:
            self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
            return True
        except Exception:
            return False

    def create_namespace(self, name):
        self.core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def create_secret(self, namespace, name, string_data: dict):
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data}
        self.core.create_namespaced_secret(namespace, body)

    def create_root_key(self, manifest: dict, dry_run=False):
        ns = manifest["metadata"]["namespace"]
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, manifest, dry_run="All" if dry_run else None
        )

    def apply_root_key_status(self, namespace, name, status: dict, manager: str):
        """One server-side apply of `.status`, as the operator writes it."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AzureRootKey",
            "metadata": {"name": name},
            "status": status,
        }
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
            field_manager=manager,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def create_event(self, namespace, body: dict):
        """One events.k8s.io Event, posted as JSON (the client's model cannot carry eventTime's microseconds)."""
        path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        headers = {"Content-Type": "application/json"}
        request = self.api.param_serialize(
            "POST", path, body=body, header_params=headers, auth_settings=["BearerToken"]
        )
        self.api.call_api(*request).read()

    def annotate_root_key(self, namespace, name, annotations: dict):
        body = {"metadata": {"annotations": annotations}}
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body, _content_type="application/merge-patch+json"
        )

    def ready(self) -> bool:
        """Whether the API server answers /readyz with 200 (False when down)."""
        try:
            return _raw(self.bare, "/readyz", 1)[0] == 200
        except Exception:
            return False

    def cpu_seconds(self) -> float:
        """The API server's own `process_cpu_seconds_total` (its /metrics)."""
        _, body = _raw(self.api, "/metrics", 10)
        for line in body.decode().splitlines():
            if line.startswith("process_cpu_seconds_total "):
                return float(line.split()[1])
        raise RuntimeError("no process_cpu_seconds_total in the API server's /metrics")

    def request_counts(self) -> dict:
        """{"VERB resource[/subresource]": count} from the API server's `apiserver_request_total`."""
        _, body = _raw(self.api, "/metrics", 10)
        out = {}
        for line in body.decode().splitlines():
            if line.startswith("apiserver_request_total{"):
                labels, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
                lb = dict(re.findall(r'(\w+)="([^"]*)"', labels))
                k = f"{lb.get('verb')} {lb.get('resource')}" + (
                    f"/{lb['subresource']}" if lb.get("subresource") else ""
                )
                out[k] = out.get(k, 0) + float(value)
        return out

    def lease_holder(self, name="rootkey-operator", namespace="default") -> str | None:
        """The Lease's holderIdentity; None while it is absent, released or unreadable."""
        try:
            return self.leases.read_namespaced_lease(name, namespace, _request_timeout=2).spec.holder_identity
        except Exception:
            return None

    def get_root_key(self, namespace, name) -> dict | None:
        """One AzureRootKey as raw JSON; None when it cannot be read (absent, or the server down)."""
        try:
            status, body = _raw(self.bare, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}", 2)
            return json.loads(body) if status == 200 else None
        except Exception:
            return None

    def list_root_keys(self) -> tuple[list[dict], str]:
        """(every AzureRootKey, the list's resourceVersion)."""
        return _list_all(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)

    def list_events(self) -> list[dict]:
        """Every events.k8s.io Event in the cluster."""
        return _list_all(self.events.list_event_for_all_namespaces)[0]

    def watch_root_keys(self, resource_version, timeout_s=3000):
        """One watch of every AzureRootKey from resource_version: (the Watch, to stop it; its raw events).

        The client's own reconnect is off (timeout_seconds): without decoded models it would resume
        from the first resourceVersion and deliver events twice, so callers resume themselves.
        """
        w = watch.Watch()
        events = w.stream(
            self.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            deserialize=False,
        )
        return w, events


def _raw(api: client.ApiClient, path, timeout_s) -> tuple[int, bytes]:
    """(status, body) of one GET with the kubeconfig's credentials."""
    request = api.param_serialize("GET", path, auth_settings=["BearerToken"])
    resp = api.call_api(*request, _request_timeout=timeout_s)
    return resp.status, resp.read()


def _list_all(list_call, *args) -> tuple[list[dict], str]:
    items, cont = [], None
    while True:
        resp = list_call(*args, limit=PAGE, _continue=cont, _preload_content=False)
        page = json.loads(resp.data)
        resp.release_conn()
        items += page["items"]
        cont = page["metadata"].get("continue")
        if not cont:
            return items, page["metadata"]["resourceVersion"]
