{{/* Names, labels and images shared by the chart's templates. */}}

{{- define "kubetune.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; the release name alone when it already says kubetune. */}}
{{- define "kubetune.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubetune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- end -}}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubetune.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kubetune.workerImage" -}}
{{- default (include "kubetune.image" .) .Values.workerImage -}}
{{- end -}}

{{/*
"true" when the operator watches a fixed list of plain namespace names: it then
gets a Role in each instead of cluster-wide rights. Globs and exclusions
(kopf's "team-*", "!kube-system") need cluster-wide rights.
*/}}
{{- define "kubetune.namespacedRBAC" -}}
{{- $plain := gt (len .Values.watchNamespaces) 0 -}}
{{- range .Values.watchNamespaces -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) -}}
{{- $plain = false -}}
{{- end -}}
{{- end -}}
{{- ternary "true" "false" $plain -}}
{{- end -}}

{{/*
The URL worker pods push progress to: the Service unless progress.url says otherwise.
*/}}
{{- define "kubetune.progressURL" -}}
{{- if .Values.progress.url -}}
{{- .Values.progress.url -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%v/v1alpha1/progress" (include "kubetune.fullname" .) .Release.Namespace .Values.progress.port -}}
{{- end -}}
{{- end }}
