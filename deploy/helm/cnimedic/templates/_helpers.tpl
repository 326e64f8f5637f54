{{/* Labels every object of the chart carries. */}}
{{- define "cnimedic.labels" -}}
app.kubernetes.io/name: cnimedic
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The manager's ServiceAccount as the API server names it: the admission policy exempts it. */}}
{{- define "cnimedic.managerUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:cnimedic-manager
{{- end -}}
