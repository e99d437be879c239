{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "jetpool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator's resource name: "<release>-jetpool-operator", or just "jetpool-operator"
     when the release is called jetpool. */}}
{{- define "jetpool.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s-operator" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "jetpool.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of everything the chart installs (the CRD has no component). */}}
{{- define "jetpool.commonLabels" -}}
helm.sh/chart: {{ include "jetpool.chart" . }}
app.kubernetes.io/name: {{ include "jetpool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: jetpool
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "jetpool.labels" -}}
{{ include "jetpool.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "jetpool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jetpool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "jetpool.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jetpool.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "jetpool.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Mode ----------------------------------------------------------------------------- */}}

{{/* "true" when the operator watches every namespace (no list given). */}}
{{- define "jetpool.clusterwide" -}}
{{- if not .Values.watch.namespaces }}true{{ end }}
{{- end }}

{{/* The peering object's name: its own per release, so shards never pause each other. */}}
{{- define "jetpool.peeringName" -}}
{{- if .Values.peering.enabled }}{{ default .Release.Name .Values.peering.name }}{{ end }}
{{- end }}

{{/* shard.selector (a LabelSelector) as the operator's label selector string, in kubectl -l
     syntax: k=v for matchLabels, "k in (a,b)", "k notin (a,b)", "k", "!k" for expressions. */}}
{{- define "jetpool.shardSelector" -}}
{{- $selector := .Values.shard.selector | default dict }}
{{- $parts := list }}
{{- range $key, $value := ($selector.matchLabels | default dict) }}
{{- $parts = append $parts (printf "%s=%s" $key $value) }}
{{- end }}
{{- range ($selector.matchExpressions | default list) }}
{{- if eq .operator "In" }}
{{- $parts = append $parts (printf "%s in (%s)" .key (join "," .values)) }}
{{- else if eq .operator "NotIn" }}
{{- $parts = append $parts (printf "%s notin (%s)" .key (join "," .values)) }}
{{- else if eq .operator "Exists" }}
{{- $parts = append $parts .key }}
{{- else }}
{{- $parts = append $parts (printf "!%s" .key) }}
{{- end }}
{{- end }}
{{- join "," $parts }}
{{- end }}

{{/* Where the admission policies apply: the release's shard. admissionPolicy.namespaceSelector
     if set, else the watched namespaces (if listed); and the pools shard.selector selects. */}}
{{- define "jetpool.policyMatchResources" -}}
{{- $namespaces := .Values.admissionPolicy.namespaceSelector }}
{{- if and (not $namespaces) .Values.watch.namespaces }}
{{- $namespaces = dict "matchExpressions" (list (dict "key" "kubernetes.io/metadata.name" "operator" "In" "values" .Values.watch.namespaces)) }}
{{- end }}
{{- if or $namespaces .Values.shard.selector }}
matchResources:
  {{- with $namespaces }}
  namespaceSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.shard.selector }}
  objectSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* RBAC rules -----------------------------------------------------------------------
     Least privilege: exactly the verbs and resources the operator uses. One definition,
     used by the ClusterRole (all namespaces) or by a Role per watched namespace, and rendered
     into manifests/base by manifests/generate.py, so the chart and kustomize cannot drift. */}}

{{/* What the operator does inside the namespaces it watches. */}}
{{- define "jetpool.rules.namespaced" -}}
# The WorkerPool API: watch pools, patch kopf's annotations/finalizer, write status.
- apiGroups: [jetpool.dev]
  resources: [workerpools]
  verbs: [get, list, watch, patch]
- apiGroups: [jetpool.dev]
  resources: [workerpools/status]
  verbs: [get, patch, update]
# A pool's children, applied server-side (PATCH), watched for drift, removed with the pool.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [serviceaccounts, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
# NATS credentials named by spec.nats.credentialsSecret: read one by name, never list.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Kubernetes Events about pools (kopf posts them with the core API; newer clients use events.k8s.io).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if and .Values.peering.enabled (not (include "jetpool.clusterwide" .)) }}
# kopf peering (namespaced mode): one active operator, the others paused.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/* What the operator needs at cluster scope. */}}
{{- define "jetpool.rules.cluster" -}}
# kopf scans CRDs to learn which resources it can serve.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
# kopf follows namespaces as they come and go; it lists them even when given an explicit
# list (without this it retries for about a minute at startup, then falls back).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- if and .Values.peering.enabled (include "jetpool.clusterwide" .) }}
# kopf peering (cluster-wide mode): one active operator, the others paused.
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}
