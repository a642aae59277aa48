"""values.schema.json rejects values that would deploy something broken or unsafe."""

from __future__ import annotations

import pytest

from .rendering import RELEASE, helm


def template_with(*set_json: str) -> tuple[int, str]:
    args = ["template", RELEASE]
    for item in set_json:
        args += ["--set-json", item]
    result = helm(*args, check=False)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("set_json", "complaint"),
    [
        ('worker.autoscaling.engine="both"', "worker.autoscaling.engine"),
        ('auth.apiKeys=[{"name": "ci", "key": "a-plain-text-key-1234"}]', "sha256"),
        ('auth.apiKeys=[{"name": "ci", "sha256": "not-hex"}]', "sha256"),
        (
            'auth.apiKeys=[{"name": "ci", "sha256": "%s", "scopes": ["root"]}]' % ("a" * 64),
            "scopes",
        ),
        ('worker.pools.cpu.queue="tpu"', "queue"),
        ('worker.pools.cpu.gpus="one"', "gpus"),
        ("gateway.replicaCount=-1", "replicaCount"),
        ("triton.resources.limits=null", "limits"),
        ('gateway.resources.requests={"cpu": "1", "memory": null}', "memory"),
        ("triton.gpu.count=0", "count"),
        ("triton.ports.grpc=70000", "grpc"),
        (
            'containerSecurityContext={"allowPrivilegeEscalation": true, "runAsNonRoot": true}',
            "allowPrivilegeEscalation",
        ),
        ('podSecurityContext={"runAsNonRoot": false}', "runAsNonRoot"),
        ('gatway={"enabled": true}', "gatway"),
        ('gateway.autoscale={"enabled": true}', "autoscale"),
        ('externalRedis.url="http://redis:6379"', "externalRedis.url"),
        ('monitoring.serviceMonitor.interval="often"', "interval"),
        ('gateway.image.digest="latest"', "digest"),
        ('data.volumes=[{"name": "coco", "mountPath": "data", "claimName": "c"}]', "mountPath"),
        ("data.imageUrls.maxBytes=0", "maxBytes"),
        ("gateway.limits.rateLimitRequests=-1", "rateLimitRequests"),
        ("gateway.limits.maxBodyBytes=10", "maxBodyBytes"),
    ],
)
def test_schema_rejects_bad_values(set_json: str, complaint: str) -> None:
    code, stderr = template_with(set_json)
    assert code != 0
    assert "schema" in stderr and complaint in stderr, stderr


def test_schema_accepts_a_full_custom_configuration() -> None:
    code, stderr = template_with(
        'auth.apiKeys=[{"name": "ci", "sha256": "%s", "scopes": ["read", "submit"]}]' % ("b" * 64),
        'worker.pools.big={"enabled": true, "queue": "gpu", "gpus": 2, "resources": '
        '{"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"cpu": "16", "memory": "64Gi"}}, '
        '"autoscaling": {"minReplicas": 1, "maxReplicas": 2}}',
        'gateway.image.digest="sha256:%s"' % ("c" * 64),
        'global.imageRegistry="registry.example.org"',
    )
    assert code == 0, stderr
