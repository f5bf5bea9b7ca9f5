"""The Kubernetes path: the rendered Zero to JupyterHub values build a pod that keeps the policy.

The pod manifest is made by KubeSpawner itself (``get_pod_manifest``) from the ``hub.extraConfig``
the values carry, offline: a kubeconfig naming an unreachable API server satisfies the client
setup, and no call reaches any cluster.
"""

from __future__ import annotations

import asyncio

import pytest
import yaml

from enclave.io.hub.k8s import network_policy, render_values, render_values_yaml

kubespawner = pytest.importorskip("kubespawner")
from traitlets.config import Config

OFFLINE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: offline, user: {token: offline}}]
contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: enclave}}]
current-context: offline
"""


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(OFFLINE_KUBECONFIG)
    values = yaml.safe_load(render_values_yaml(image="registry.example/enclave-userenv:7"))
    c = Config()
    # what z2jh maps from storage (the home volume), which the policy must keep
    c.KubeSpawner.volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-{username}"}}]
    c.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]
    exec(values["hub"]["extraConfig"]["00-enclave-policy"], {"c": c})
    mp = pytest.MonkeyPatch()
    from kubernetes_asyncio.config import kube_config

    mp.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    mp.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    async def manifest():
        spawner = kubespawner.KubeSpawner(config=c, _mock=True)
        return (await spawner.get_pod_manifest()).to_dict(), spawner

    try:
        d, spawner = asyncio.run(manifest())
    finally:
        mp.undo()
    return d, spawner, values


def test_pod_runs_as_non_root_without_capabilities(pod):
    d, _, _ = pod
    psc = d["spec"]["security_context"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    (container,) = d["spec"]["containers"]
    csc = container["security_context"]
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] != 0
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["allowPrivilegeEscalation"] is False and csc["privileged"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert container["image"] == "registry.example/enclave-userenv:7"
    assert container["args"][:3] == ["python", "-I", "-m"]


def test_data_mounts_are_read_only_and_home_is_kept(pod):
    d, _, _ = pod
    (container,) = d["spec"]["containers"]
    mounts = {m["name"]: m for m in container["volume_mounts"]}
    assert mounts["release"]["read_only"] is True and mounts["synthetic"]["read_only"] is True
    assert mounts["home"]["read_only"] in (None, False)
    claims = {v["name"]: v["persistent_volume_claim"] for v in d["spec"]["volumes"]
              if v["persistent_volume_claim"]}
    assert claims["release"]["readOnly"] is True and claims["synthetic"]["readOnly"] is True
    assert claims["home"]["claimName"].startswith("claim-")


def test_no_service_account_token_and_no_user_config(pod):
    d, spawner, _ = pod
    assert d["spec"]["automount_service_account_token"] is False
    assert d["spec"]["enable_service_links"] is False
    assert spawner.disable_user_config is True
    env = {e["name"]: e.get("value") for e in d["spec"]["containers"][0]["env"]}
    assert env["JUPYTERHUB_DISABLE_USER_CONFIG"] == "1" and env["PYTHONNOUSERSITE"] == "1"


def test_egress_is_denied_except_hub_and_airlock(pod):
    _, _, values = pod
    np = network_policy(values)
    assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    targets = [rule["to"][0]["podSelector"]["matchLabels"] for rule in np["spec"]["egress"]]
    assert targets == [{"component": "hub"}, {"app.kubernetes.io/name": "enclave-airlock"}]
    assert all(rule.get("ports") for rule in np["spec"]["egress"])
    assert not any(values["singleuser"]["networkPolicy"]["egressAllowRules"].values())
    loosened = render_values()
    loosened["singleuser"]["networkPolicy"]["egressAllowRules"]["nonPrivateIPs"] = True
    with pytest.raises(ValueError, match="egressAllowRules"):
        network_policy(loosened)
