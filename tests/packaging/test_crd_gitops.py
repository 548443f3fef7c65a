"""GitOps safety: the CRD carries what stops Argo CD and Flux from deleting it (and with it every
AzureRootKey, whose `Revoke` objects would then revoke), in the chart and in the plain manifests."""

from __future__ import annotations

import yaml

from conftest import CRD_SOURCE, find

KEEP = {
    "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
    "kustomize.toolkit.fluxcd.io/prune": "disabled",
}


def test_the_generated_crd_is_kept_by_argo_cd_and_flux():
    annotations = yaml.safe_load(CRD_SOURCE.read_text())["metadata"]["annotations"]
    assert KEEP.items() <= annotations.items()


def test_the_chart_keeps_the_crd_by_default(render):
    (crd,) = find(render(), "CustomResourceDefinition")
    annotations = crd["metadata"]["annotations"]
    assert KEEP.items() <= annotations.items()
    assert annotations["helm.sh/resource-policy"] == "keep"


def test_crds_keep_false_drops_every_keep_annotation_and_extra_annotations_are_added(render):
    (crd,) = find(
        render("--set", "crds.keep=false", "--set", "crds.annotations.team=platform"), "CustomResourceDefinition"
    )
    annotations = crd["metadata"]["annotations"]
    assert annotations == {"team": "platform"}
