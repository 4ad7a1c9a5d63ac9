{{/*
Names and labels shared by every template (the monitoring templates use them too).
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "gpt-oss-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified name of the release's objects: fullnameOverride, else "<release>" when the release
name already contains the chart name, else "<release>-<chart>". At most 63 characters (DNS label).
*/}}
{{- define "gpt-oss-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "gpt-oss-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pod (stable across upgrades). */}}
{{- define "gpt-oss-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpt-oss-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "gpt-oss-operator.labels" -}}
helm.sh/chart: {{ include "gpt-oss-operator.chart" . }}
{{ include "gpt-oss-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpt-oss-operator
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "gpt-oss-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpt-oss-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "gpt-oss-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
RBAC rules for GptOssDeployments and their children, shared by the ClusterRole (all namespaces) and the
per-namespace Roles (watchNamespaces). Exactly the verbs the operator uses:
- gptossdeployments: get (fresh read per reconcile), list/watch (Kopf), patch (Kopf's annotations);
  status: patch; scale: get/patch (the autoscaler);
- children: list and watch (the operator's watch-fed caches of its children, every kind it manages),
  create+patch (server-side apply creates or updates), delete (prune);
- events: create (and patch, for aggregation by the server).
Nodes and pods are read cluster-wide (rbac.yaml): free GPUs count every tenant's pods.
*/}}
{{- define "gpt-oss-operator.namespacedRules" -}}
- apiGroups: ["gptoss.io"]
  resources: ["gptossdeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["gptoss.io"]
  resources: ["gptossdeployments/status"]
  verbs: ["patch"]
- apiGroups: ["gptoss.io"]
  resources: ["gptossdeployments/scale"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "services", "persistentvolumeclaims"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
