{{/* Chart name, truncated to 63 characters (DNS label). */}}
{{- define "polaris-twin-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart unless the release name already contains the chart name.
Truncated to 63 characters because some Kubernetes name fields are limited to that.
*/}}
{{- define "polaris-twin-operator.fullname" -}}
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

{{/* chart label value: name-version */}}
{{- define "polaris-twin-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels */}}
{{- define "polaris-twin-operator.labels" -}}
helm.sh/chart: {{ include "polaris-twin-operator.chart" . }}
{{ include "polaris-twin-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: polaris
{{- end }}

{{/* Selector labels (immutable once installed) */}}
{{- define "polaris-twin-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "polaris-twin-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount name */}}
{{- define "polaris-twin-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "polaris-twin-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image (also the twins' default image): repository@digest when pinned. */}}
{{- define "polaris-twin-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "polaris-twin-operator.twinImage" -}}
{{- default (include "polaris-twin-operator.image" .) .Values.twinImage }}
{{- end }}

{{/* Peering (leader election) is on with several replicas or when asked for. */}}
{{- define "polaris-twin-operator.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* Namespaced RBAC: Roles in the watched namespaces instead of cluster-wide verbs. */}}
{{- define "polaris-twin-operator.namespacedRbac" -}}
{{- if and .Values.rbac.namespaced .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/* Rules the operator needs in every namespace it serves (see rbac.yaml). */}}
{{- define "polaris-twin-operator.namespacedRules" -}}
- apiGroups: [polaris.io]
  resources: [digitaltwins]
  verbs: [get, list, watch, patch]
- apiGroups: [polaris.io]
  resources: [digitaltwins/status]
  verbs: [get, patch]
- apiGroups: [polaris.io]
  resources: [digitaltwins/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, create, update, delete]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, update]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end }}
