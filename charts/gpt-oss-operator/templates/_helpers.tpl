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
per-namespace Roles (watchNamespaces). Exactly the verbs the operator uses (kube.py and Kopf; docs/security.md
lists them), audited against every request it makes; tests/unit/chart/test_chart_rbac.py keeps it so:
- gptossdeployments: get (fresh read per reconcile), list/watch (Kopf and the caches), patch (Kopf, and the
  one-time move of status field ownership); status: patch (server-side apply); scale: patch (the autoscaler);
  finalizers: update (children carry blockOwnerDeletion owner references; OpenShift's admission requires it);
- children: get (is a same-named object someone else's? never adopted), list/watch (the watch-fed caches),
  create+patch (server-side apply creates or updates), delete (prune);
- secrets: get only, and the operator asks for metadata only (PartialObjectMetadata): is a token Secret
  labelled gptoss.io/weights-token=true? RBAC cannot tell metadata from data; the operator never asks for data;
- pods: list/watch here only when rbac.clusterWidePodReads is false (else the cluster-wide rule covers them);
- events: create (the operator posts core/v1 Events; Kopf's own posting is off).
*/}}
{{- define "gpt-oss-operator.namespacedRules" -}}
- apiGroups: ["gptoss.io"]
  resources: ["gptossdeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["gptoss.io"]
  resources: ["gptossdeployments/status", "gptossdeployments/scale"]
  verbs: ["patch"]
- apiGroups: ["gptoss.io"]
  resources: ["gptossdeployments/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["configmaps", "services", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- if not .Values.rbac.clusterWidePodReads }}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
{{- end }}
- apiGroups: [""]
  resources: ["events"]
  # create: the operator's Events; list: the kubelet's FailedMount Events of a weights download pod that
  # cannot start (one pod at a time, by field selector; docs/security.md)
  verbs: ["create", "list"]
{{- end }}
