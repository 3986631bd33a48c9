"""Airflow DAGs that run `sluice sync --json` for the `articles` connection every 15 minutes.

This replaces the hand-written "SELECT rows WHERE embedding IS NULL -> call OpenAI -> UPDATE"
DAG: sluice reads only new and changed rows (incremental cursor), embeds only text it has not
embedded before, and replaces each document's chunks as a unit.

Two variants of the same job:

* ``sluice_articles`` runs the sluice image in a pod (KubernetesPodOperator). The pipeline comes
  from the ``sluice-pipeline`` ConfigMap and the secrets from the ``sluice-secrets`` Secret (see
  ../kubernetes/). The JSON summary is returned as the task's XCom.
* ``sluice_articles_bash`` runs the ``sluice`` command installed on the worker (BashOperator),
  with the pipeline file and environment variables on the worker.

Either task fails when sluice exits non-zero (any connection failed or was interrupted), so
Airflow's retries and alerting apply. Needs apache-airflow-providers-cncf-kubernetes >= 7.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

PIPELINE = "/etc/sluice/pipeline.yaml"
PUSHGATEWAY = "http://prometheus-pushgateway.monitoring.svc:9091"

default_args = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}

with DAG(
    dag_id="sluice_articles",
    description="Keep the articles vector index in step with the articles table (pod)",
    start_date=datetime(2026, 1, 1),
    schedule="*/15 * * * *",
    catchup=False,
    max_active_runs=1,  # one sync of a connection at a time
    default_args=default_args,
    tags=["sluice", "rag"],
) as dag:
    KubernetesPodOperator(
        task_id="sync",
        name="sluice-articles",
        namespace="default",
        image="ghcr.io/example/sluice:0.1.0",
        # The image's entrypoint is `node /app/bin/sluice.js`; a shell writes the --json summary
        # where the XCom sidecar reads it. `exec` keeps sluice's exit code as the pod's.
        cmds=["sh", "-c"],
        arguments=[
            "mkdir -p /airflow/xcom && exec node /app/bin/sluice.js sync "
            f"{PIPELINE} --connection articles --json --pushgateway {PUSHGATEWAY} "
            "> /airflow/xcom/return.json"
        ],
        do_xcom_push=True,
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="sluice-secrets"))],
        env_vars=[k8s.V1EnvVar(name="NODE_OPTIONS", value="--max-old-space-size=320")],
        volumes=[
            k8s.V1Volume(name="pipeline", config_map=k8s.V1ConfigMapVolumeSource(name="sluice-pipeline")),
            k8s.V1Volume(name="work", empty_dir=k8s.V1EmptyDirVolumeSource()),
        ],
        volume_mounts=[
            k8s.V1VolumeMount(name="pipeline", mount_path="/etc/sluice", read_only=True),
            k8s.V1VolumeMount(name="work", mount_path="/var/lib/sluice"),
        ],
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "250m", "memory": "256Mi"},
            limits={"memory": "512Mi"},
        ),
        security_context=k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=1000, fs_group=1000),
        get_logs=True,  # sluice logs JSON lines on stderr
        on_finish_action="delete_pod",
        execution_timeout=timedelta(hours=1),
    )

with DAG(
    dag_id="sluice_articles_bash",
    description="Keep the articles vector index in step with the articles table (worker shell)",
    start_date=datetime(2026, 1, 1),
    schedule="*/15 * * * *",
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["sluice", "rag"],
) as bash_dag:
    BashOperator(
        task_id="sync",
        # `set -o pipefail` is not needed: no pipe. BashOperator fails the task on a non-zero exit.
        bash_command=(
            "sluice sync {{ var.value.get('sluice_pipeline', '/opt/sluice/pipeline.yaml') }} "
            f"--connection articles --json --pushgateway {PUSHGATEWAY}"
        ),
        # SOURCE_DATABASE_URL, VECTOR_DATABASE_URL and OPENAI_API_KEY come from the worker's
        # environment (or add env={...} from Airflow connections here); append_env keeps PATH.
        append_env=True,
        do_xcom_push=False,  # the summary is multi-line JSON; it stays in the task log
        execution_timeout=timedelta(hours=1),
    )
