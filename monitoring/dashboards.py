"""The Grafana dashboards of gpt-oss-operator, defined as data (source of truth).

`python monitoring/sync.py` writes them as JSON into charts/gpt-oss-operator/files/dashboards/, from
where the chart ships them as ConfigMaps for the Grafana sidecar. Queries use the recording rules of
monitoring/rules/gpt-oss.rules.yaml where one exists; every query is run against a real Prometheus by
tests/monitoring/test_monitoring_real_prometheus.py.

Dashboard JSON model: Grafana schemaVersion 39 (Grafana 10.3 - 11.x), one datasource variable
(`datasource`) used by every panel and query variable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

SCHEMA_VERSION: Final = 39
DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH: Final = 24
TAGS: Final = ["gpt-oss", "gpt-oss-operator"]

Json = dict[str, Any]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 12
    height: int = 8
    min_value: float | None = 0
    max_value: float | None = None
    mappings: tuple[Json, ...] = ()
    stacked: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _variable_datasource() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def _variable_query(name: str, label: str, query: str, *, include_all: bool) -> Json:
    variable: Json = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {},
        "hide": 0,
        "includeAll": include_all,
        "multi": include_all,
        "options": [],
        "refresh": 2,  # on time range change: deployments come and go
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
    }
    if include_all:
        variable["allValue"] = ".*"
    return variable


def _target(query: Query, ref_id: str) -> Json:
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": query.expr,
        "legendFormat": query.legend,
        "range": True,
        "refId": ref_id,
    }


def _field_config(panel: Panel) -> Json:
    defaults: Json = {
        "unit": panel.unit,
        "color": {"mode": "palette-classic" if panel.kind == "timeseries" else "thresholds"},
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
        "mappings": list(panel.mappings),
    }
    if panel.min_value is not None:
        defaults["min"] = panel.min_value
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
        }
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> Json:
    if panel.kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    return {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _layout(rows: tuple[Row, ...]) -> list[Json]:
    """Place rows and panels left to right, top to bottom, and number them."""
    panels: list[Json] = []
    next_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(
                {
                    "id": next_id,
                    "type": panel.kind,
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": DATASOURCE,
                    "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
                    "fieldConfig": _field_config(panel),
                    "options": _options(panel),
                    "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
                }
            )
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def _dashboard(uid: str, title: str, description: str, variables: list[Json], rows: tuple[Row, ...]) -> Json:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": _layout(rows),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": variables},
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


YES_NO: Final = (
    {
        "type": "value",
        "options": {
            "0": {"text": "No", "color": "red", "index": 0},
            "1": {"text": "Yes", "color": "green", "index": 1},
        },
    },
)


def fleet_overview() -> Json:
    ns = 'namespace=~"$namespace"'
    by_deployment = "{{namespace}}/{{gptoss_deployment}}"
    rows = (
        Row(
            "Fleet",
            (
                Panel(
                    "Deployments",
                    "GptOssDeployments managed by the operator.",
                    (Query("sum(gptoss_operator_deployments)", "deployments"),),
                    kind="stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Ready / desired replicas",
                    "Ready server replicas and the replicas the operator wants, over the selected namespaces.",
                    (
                        Query(f"sum(gptoss_deployment:gptoss_operator_ready_replicas:max{{{ns}}})", "ready"),
                        Query(f"sum(gptoss_deployment:gptoss_operator_desired_replicas:max{{{ns}}})", "desired"),
                    ),
                    kind="stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "GPUs",
                    "GPUs requested by ready and starting replicas.",
                    (Query(f"sum(gptoss_deployment:gptoss_operator_gpus:max{{{ns}}})", "GPUs"),),
                    kind="stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Requests/s",
                    "Finished requests per second, all outcomes.",
                    (Query(f"sum(gptoss_deployment:gptoss_requests:rate1m{{{ns}}})", "requests/s"),),
                    unit="reqps",
                    kind="stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Output tokens/s",
                    "Generated tokens per second.",
                    (Query(f"sum(gptoss_deployment:gptoss_generated_tokens:rate1m{{{ns}}})", "tokens/s"),),
                    kind="stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Capacity-limited deployments",
                    "Deployments whose autoscaler is capped by free GPUs (CapacityLimited).",
                    (Query(f"sum(gptoss_deployment:gptoss_operator_capacity_limited:max{{{ns}}})", "limited"),),
                    kind="stat",
                    width=4,
                    height=4,
                ),
            ),
        ),
        Row(
            "Deployments",
            (
                Panel(
                    "Deployments by phase",
                    "GptOssDeployments by status phase.",
                    (Query("sum by (phase) (gptoss_operator_deployments)", "{{phase}}"),),
                    stacked=True,
                ),
                Panel(
                    "Ready vs desired replicas",
                    "Ready and desired replicas per deployment.",
                    (
                        Query(
                            f"gptoss_deployment:gptoss_operator_ready_replicas:max{{{ns}}}", f"{by_deployment} ready"
                        ),
                        Query(
                            f"gptoss_deployment:gptoss_operator_desired_replicas:max{{{ns}}}",
                            f"{by_deployment} desired",
                        ),
                    ),
                ),
                Panel(
                    "Requests/s",
                    "Finished requests per second per deployment.",
                    (Query(f"gptoss_deployment:gptoss_requests:rate1m{{{ns}}}", by_deployment),),
                    unit="reqps",
                ),
                Panel(
                    "Output tokens/s",
                    "Generated tokens per second per deployment.",
                    (Query(f"gptoss_deployment:gptoss_generated_tokens:rate1m{{{ns}}}", by_deployment),),
                ),
                Panel(
                    "Time to first token p90",
                    "90th percentile of the time to first token over 5 minutes, per deployment.",
                    (Query(f"gptoss_deployment:gptoss_time_to_first_token_seconds:p90{{{ns}}}", by_deployment),),
                    unit="s",
                ),
                Panel(
                    "Waiting requests",
                    "Requests admitted but not yet scheduled, per deployment.",
                    (Query(f"gptoss_deployment:gptoss_requests_waiting:sum{{{ns}}}", by_deployment),),
                ),
                Panel(
                    "KV cache utilization (fullest replica)",
                    "KV cache utilization of each deployment's fullest replica.",
                    (Query(f"gptoss_deployment:gptoss_kv_cache_utilization_ratio:max{{{ns}}}", by_deployment),),
                    unit="percentunit",
                    max_value=1,
                ),
                Panel(
                    "GPU utilization",
                    "Mean GPU utilization per deployment (GPU pods only).",
                    (Query(f"gptoss_deployment:nv_gpu_utilization:avg{{{ns}}}", by_deployment),),
                    unit="percentunit",
                    max_value=1,
                ),
                Panel(
                    "GPU memory used",
                    "Share of GPU memory in use per deployment (weights + KV cache are allocated up front).",
                    (
                        Query(
                            f"gptoss_deployment:nv_gpu_memory_used_bytes:sum{{{ns}}}"
                            f" / gptoss_deployment:nv_gpu_memory_total_bytes:sum{{{ns}}}",
                            by_deployment,
                        ),
                    ),
                    unit="percentunit",
                    max_value=1,
                ),
                Panel(
                    "Autoscaler decisions",
                    "Decisions of the operator's autoscaler per deployment and direction (per 5 minutes).",
                    (
                        Query(
                            "sum by (namespace, gptoss_deployment, direction) "
                            f"(gptoss_deployment:gptoss_operator_autoscaler_decisions:rate5m{{{ns}}}) * 300",
                            f"{by_deployment} {{{{direction}}}}",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Operator",
            (
                Panel(
                    "Reconciles/s by result",
                    "Reconciles of all GptOssDeployments by result.",
                    (Query("result:gptoss_operator_reconciles:rate5m", "{{result}}"),),
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Reconcile duration p99",
                    "99th percentile of the reconcile duration over 5 minutes.",
                    (Query("gptoss_operator:gptoss_operator_reconcile_duration_seconds:p99", "p99"),),
                    unit="s",
                    width=8,
                ),
                Panel(
                    "API requests/s by verb and code",
                    "Requests of the operator to the Kubernetes API server.",
                    (
                        Query(
                            "sum by (verb, code) (rate(gptoss_operator_api_requests_total[$__rate_interval]))",
                            "{{verb}} {{code}}",
                        ),
                    ),
                    unit="reqps",
                    width=8,
                ),
            ),
        ),
    )
    variables = [
        _variable_datasource(),
        _variable_query(
            "namespace", "Namespace", "label_values(gptoss_operator_desired_replicas, namespace)", include_all=True
        ),
    ]
    return _dashboard(
        "gptoss-fleet",
        "gpt-oss / Fleet overview",
        "Every GptOssDeployment at a glance: replicas, GPUs, traffic, latency, KV cache and the operator.",
        variables,
        rows,
    )


def deployment_view() -> Json:
    sel = 'namespace="$namespace", gptoss_deployment="$deployment"'
    op_sel = 'namespace="$namespace", name="$deployment"'
    rows = (
        Row(
            "State",
            (
                Panel(
                    "Ready replicas",
                    "Ready server replicas.",
                    (Query(f"gptoss_deployment:gptoss_operator_ready_replicas:max{{{sel}}}", "ready"),),
                    kind="stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Desired replicas",
                    "Replicas the operator wants (spec or autoscaler, after the capacity cap).",
                    (Query(f"gptoss_deployment:gptoss_operator_desired_replicas:max{{{sel}}}", "desired"),),
                    kind="stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "GPUs",
                    "GPUs requested by ready and starting replicas.",
                    (Query(f"gptoss_deployment:gptoss_operator_gpus:max{{{sel}}}", "GPUs"),),
                    kind="stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Weights ready",
                    "Whether the weights are complete in the cache.",
                    (Query(f"gptoss_deployment:gptoss_operator_weights_ready:max{{{sel}}}", "weights"),),
                    kind="stat",
                    width=4,
                    height=4,
                    mappings=YES_NO,
                ),
                Panel(
                    "Capacity limited",
                    "Whether the autoscaler is capped by free GPUs (condition CapacityLimited).",
                    (Query(f"gptoss_deployment:gptoss_operator_capacity_limited:max{{{sel}}}", "limited"),),
                    kind="stat",
                    width=4,
                    height=4,
                    mappings=(
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "No", "color": "green", "index": 0},
                                "1": {"text": "Yes", "color": "orange", "index": 1},
                            },
                        },
                    ),
                ),
                Panel(
                    "Request errors",
                    "Share of failed requests over 5 minutes.",
                    (Query(f"gptoss_deployment:gptoss_request_errors:ratio_rate5m{{{sel}}}", "errors"),),
                    unit="percentunit",
                    kind="stat",
                    width=4,
                    height=4,
                ),
            ),
        ),
        Row(
            "Traffic and latency",
            (
                Panel(
                    "Requests/s by outcome",
                    "Finished requests per second by outcome (success, error, cancelled).",
                    (
                        Query(
                            f"sum by (outcome) (rate(gptoss_requests_total{{{sel}}}[$__rate_interval]))",
                            "{{outcome}}",
                        ),
                    ),
                    unit="reqps",
                    stacked=True,
                ),
                Panel(
                    "Tokens/s",
                    "Output (generated) and prompt tokens per second.",
                    (
                        Query(f"gptoss_deployment:gptoss_generated_tokens:rate1m{{{sel}}}", "output"),
                        Query(f"gptoss_deployment:gptoss_prompt_tokens:rate1m{{{sel}}}", "prompt"),
                    ),
                ),
                Panel(
                    "Time to first token",
                    "Percentiles of the time to first token over 5 minutes, and the spec's target when set.",
                    (
                        Query(f"gptoss_deployment:gptoss_time_to_first_token_seconds:p50{{{sel}}}", "p50"),
                        Query(f"gptoss_deployment:gptoss_time_to_first_token_seconds:p90{{{sel}}}", "p90"),
                        Query(f"gptoss_deployment:gptoss_time_to_first_token_seconds:p99{{{sel}}}", "p99"),
                        Query(
                            f"gptoss_deployment:gptoss_operator_time_to_first_token_target_seconds:min{{{sel}}}",
                            "target",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Triton queue and request time",
                    "Mean time a request waited in Triton's queue and spent in Triton, over 5 minutes.",
                    (
                        Query(f"gptoss_deployment:nv_inference_queue_duration_seconds:mean5m{{{sel}}}", "queue"),
                        Query(f"gptoss_deployment:nv_inference_request_duration_seconds:mean5m{{{sel}}}", "request"),
                    ),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Scheduler and KV cache",
            (
                Panel(
                    "Waiting and running requests",
                    "Per replica: sequences being generated and requests waiting to be scheduled.",
                    (
                        Query(f"sum by (pod) (gptoss_requests_running{{{sel}}})", "{{pod}} running"),
                        Query(f"sum by (pod) (gptoss_requests_waiting{{{sel}}})", "{{pod}} waiting"),
                    ),
                ),
                Panel(
                    "KV cache utilization",
                    "Share of each replica's KV cache in use.",
                    (Query(f"max by (pod) (gptoss_kv_cache_utilization_ratio{{{sel}}})", "{{pod}}"),),
                    unit="percentunit",
                    max_value=1,
                ),
            ),
        ),
        Row(
            "GPUs",
            (
                Panel(
                    "GPU utilization",
                    "Utilization of each GPU of each replica (GPU pods only).",
                    (Query(f"nv_gpu_utilization{{{sel}}}", "{{pod}} {{gpu_uuid}}"),),
                    unit="percentunit",
                    max_value=1,
                ),
                Panel(
                    "GPU memory",
                    "GPU memory used and available per replica.",
                    (
                        Query(f"sum by (pod) (nv_gpu_memory_used_bytes{{{sel}}})", "{{pod}} used"),
                        Query(f"sum by (pod) (nv_gpu_memory_total_bytes{{{sel}}})", "{{pod}} total"),
                    ),
                    unit="bytes",
                ),
            ),
        ),
        Row(
            "Scaling",
            (
                Panel(
                    "Desired vs ready replicas",
                    "Replicas the operator wants and replicas that are ready.",
                    (
                        Query(f"gptoss_deployment:gptoss_operator_desired_replicas:max{{{sel}}}", "desired"),
                        Query(f"gptoss_deployment:gptoss_operator_ready_replicas:max{{{sel}}}", "ready"),
                    ),
                ),
                Panel(
                    "Autoscaler decisions",
                    "Decisions of the operator's autoscaler by direction and reason.",
                    (
                        Query(
                            "sum by (direction, reason) "
                            f"(increase(gptoss_operator_autoscaler_decisions_total{{{op_sel}}}[$__rate_interval]))",
                            "{{direction}} ({{reason}})",
                        ),
                    ),
                    stacked=True,
                ),
            ),
        ),
    )
    variables = [
        _variable_datasource(),
        _variable_query(
            "namespace", "Namespace", "label_values(gptoss_operator_desired_replicas, namespace)", include_all=False
        ),
        _variable_query(
            "deployment",
            "Deployment",
            'label_values(gptoss_operator_desired_replicas{namespace="$namespace"}, name)',
            include_all=False,
        ),
    ]
    return _dashboard(
        "gptoss-deployment",
        "gpt-oss / Deployment",
        "One GptOssDeployment: traffic, time to first token, scheduler queue, KV cache, GPUs and scaling.",
        variables,
        rows,
    )


# File name (under charts/gpt-oss-operator/files/dashboards/) -> dashboard.
DASHBOARDS: Final = {"fleet-overview.json": fleet_overview, "deployment.json": deployment_view}
