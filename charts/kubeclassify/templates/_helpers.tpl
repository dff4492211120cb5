{{/*
Every object's name, and the pods' selector label: `<release>-operator`, so the release
`kubeclassify` makes the names deploy/ has, and two releases never select each other's pods.
*/}}
{{- define "kubeclassify.fullname" -}}
{{ .Release.Name }}-operator
{{- end }}

{{- define "kubeclassify.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeclassify.fullname" . }}
{{- end }}

{{/* metadata.labels (and annotations, if any) of every object the chart makes. */}}
{{- define "kubeclassify.metadata" -}}
labels:
  {{- include "kubeclassify.selectorLabels" . | nindent 2 }}
  {{- if .Values.standardLabels }}
  helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
  app.kubernetes.io/instance: {{ .Release.Name }}
  app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
  app.kubernetes.io/managed-by: {{ .Release.Service }}
  {{- end }}
  {{- with .Values.labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Least privilege: exactly the verbs the operator (and kopf under it) uses; tests/operator/
test_security.py compares deploy/rbac.yaml's rules with the requests the operator really makes,
and tests/helm these with deploy/'s. First the rules on namespaced resources: a ClusterRole's
when the whole cluster is watched, else a Role's in each watched namespace.
*/}}
{{- define "kubeclassify.namespacedRules" -}}
# The ImageClassifiers: watch them, keep kopf's bookkeeping annotations, write the status.
- apiGroups: [kubeclassify.io]
  resources: [imageclassifiers]
  verbs: [get, list, watch, patch]
- apiGroups: [kubeclassify.io]
  resources: [imageclassifiers/status]
  verbs: [patch]
# Never requested: the children's ownerReferences set blockOwnerDeletion, which clusters with the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift, hardened clusters) allow only
# to who may update the owner's finalizers.
- apiGroups: [kubeclassify.io]
  resources: [imageclassifiers/finalizers]
  verbs: [update]
# The children: create-or-patch; the HPA is also deleted when autoscaling is switched off,
# and a canary's Deployment when spec.canary is removed.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# The track Services of Gateway mode are deleted with spec.gateway (the canary's with
# spec.canary).
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# Gateway mode's HTTPRoute: only read and written in a pass, never watched (many clusters
# have no Gateway API, and kopf cannot watch a kind the API server does not have).
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
# Pods are only listed and watched, to tell why they are not ready.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Cluster-scoped, so a ClusterRole's in either mode: kopf discovers CRDs and namespaces. */}}
{{- define "kubeclassify.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}

{{- define "kubeclassify.subjects" -}}
subjects:
  - kind: ServiceAccount
    name: {{ include "kubeclassify.fullname" . }}
    namespace: {{ .Release.Namespace }}
{{- end }}
