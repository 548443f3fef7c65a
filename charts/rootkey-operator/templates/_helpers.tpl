{{/* Chart name, truncated for DNS-1123 labels. */}}
{{- define "rootkey-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or <release> when it already contains the chart name. */}}
{{- define "rootkey-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rootkey-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rootkey-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rootkey-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rootkey-operator.labels" -}}
helm.sh/chart: {{ include "rootkey-operator.chart" . }}
{{ include "rootkey-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rootkey-operator
{{- end -}}

{{- define "rootkey-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rootkey-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when image.digest is set (the digest wins). */}}
{{- define "rootkey-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when leader election is on: more than one replica, or forced. */}}
{{- define "rootkey-operator.leaderElect" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled -}}true{{- end -}}
{{- end -}}

{{/* The CA bundle ConfigMap name, or nothing when no extra CA bundle is configured. */}}
{{- define "rootkey-operator.caConfigMap" -}}
{{- if .Values.extraCABundle.configMapName -}}
{{- .Values.extraCABundle.configMapName -}}
{{- else if .Values.extraCABundle.pem -}}
{{- printf "%s-ca-bundle" (include "rootkey-operator.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret with AZURE_CLIENT_ID / AZURE_CLIENT_SECRET for the secret identity. */}}
{{- define "rootkey-operator.azureSecretName" -}}
{{- if .Values.azure.existingSecret -}}
{{- .Values.azure.existingSecret -}}
{{- else -}}
{{- printf "%s-azure" (include "rootkey-operator.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs on the namespaces it watches. Keep in sync with deploy/base. */}}
{{- define "rootkey-operator.watchRules" -}}
- apiGroups: ["antimatter.io"]
  resources: ["azurerootkeys"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["antimatter.io"]
  resources: ["azurerootkeys/status"]
  verbs: ["patch"]
- apiGroups: ["antimatter.io"]
  resources: ["azurerootkeys/finalizers"]
  verbs: ["update"]
# Only `get`: the operator reads the Secrets objects name and never lists or watches Secrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Reading kube-system's UID (the cluster's identity). */}}
{{- define "rootkey-operator.clusterUidRule" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: ["kube-system"]
  verbs: ["get"]
{{- $selects := false }}
{{- range (default (list) .Values.tenancyPolicy.rules) }}
{{- if .namespaceSelector }}{{ $selects = true }}{{ end }}
{{- end }}
{{- if $selects }}
# The tenancy policy selects namespaces by label: read the labels of an object's namespace.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}
{{- end -}}
