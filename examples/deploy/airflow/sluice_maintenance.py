"""Weekly maintenance of the vector database that sluice writes.

* ``maintain`` runs ``sluice destination maintain --reindex --json``: rebuilds the pgvector
  index and logs table and index sizes.
* ``backup`` runs ``pg_dump --format=custom`` of the vector database to the ``sluice-backups``
  volume first, so a bad rebuild can be rolled back.

Each task fails on a non-zero exit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

secrets = [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="sluice-secrets"))]

with DAG(
    dag_id="sluice_maintenance",
    start_date=datetime(2026, 1, 1),
    schedule="30 3 * * 0",
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "data-platform", "retries": 1, "retry_delay": timedelta(minutes=10)},
    tags=["sluice", "maintenance"],
) as dag:
    backup = KubernetesPodOperator(
        task_id="backup",
        name="sluice-vector-db-backup",
        image="postgres:16-bookworm",
        cmds=["sh", "-ec"],
        arguments=[
            'out=/backups/rag-$(date -u +%Y%m%dT%H%M%SZ).dump; '
            'pg_dump --format=custom --no-owner --dbname="$VECTOR_DATABASE_URL" --file="$out.partial"; '
            'mv "$out.partial" "$out"; '
            "find /backups -name 'rag-*.dump' -mtime +7 -delete"
        ],
        env_from=secrets,
        volumes=[
            k8s.V1Volume(
                name="backups",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name="sluice-backups"),
            )
        ],
        volume_mounts=[k8s.V1VolumeMount(name="backups", mount_path="/backups")],
        on_finish_action="delete_pod",
    )

    maintain = KubernetesPodOperator(
        task_id="maintain",
        name="sluice-maintain",
        image="ghcr.io/example/sluice:0.1.0",
        arguments=["destination", "maintain", "/etc/sluice/pipeline.yaml", "--connection", "articles", "--reindex", "--json"],
        env_from=secrets,
        volumes=[
            k8s.V1Volume(name="pipeline", config_map=k8s.V1ConfigMapVolumeSource(name="sluice-pipeline")),
            k8s.V1Volume(name="work", empty_dir=k8s.V1EmptyDirVolumeSource()),
        ],
        volume_mounts=[
            k8s.V1VolumeMount(name="pipeline", mount_path="/etc/sluice", read_only=True),
            k8s.V1VolumeMount(name="work", mount_path="/var/lib/sluice"),
        ],
        get_logs=True,
        on_finish_action="delete_pod",
    )

    backup >> maintain
