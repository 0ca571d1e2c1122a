{{/* Names and labels shared by every object. */}}
{{- define "switchboard.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "switchboard.labels" -}}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/part-of: switchboard
app.kubernetes.io/component: {{ .name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The environment every service shares, then the service's own, then its secret keys. */}}
{{- define "switchboard.env" -}}
- name: NATS_URL
  value: {{ .root.Values.nats.url | quote }}
- name: SWITCHBOARD_NAMESPACE
  value: {{ .root.Values.nats.namespace | quote }}
- name: SWITCHBOARD_ENV
  value: production
- name: LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
{{- with .root.Values.redis.url }}
- name: REDIS_URL
  value: {{ . | quote }}
{{- end }}
{{- with .root.Values.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- range $key, $value := .svc.env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- range .svc.secretKeys }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.root.Values.secrets.existingSecret }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end -}}

{{- define "switchboard.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "switchboard.fullname" . }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  {{- if not .svc.autoscaling.enabled }}
  replicas: {{ .svc.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "switchboard.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "switchboard.labels" . | nindent 8 }}
    spec:
      {{- with .root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .root.Values.podSecurityContext | nindent 8 }}
      # Longer than the service's own drain, so in-flight runs finish before the kill.
      terminationGracePeriodSeconds: {{ add .svc.drainSeconds 15 }}
      containers:
        - name: {{ .name }}
          image: "{{ .svc.image | default (printf "%s/%s" .root.Values.image.repository .name) }}:{{ .svc.tag | default .root.Values.image.tag }}"
          imagePullPolicy: {{ .root.Values.image.pullPolicy }}
          command:
            {{- toYaml .svc.command | nindent 12 }}
          env:
            {{- include "switchboard.env" . | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ .svc.healthPort }}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 5
            failureThreshold: 2
          resources:
            {{- toYaml .svc.resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
      {{- with .root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{- define "switchboard.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "switchboard.fullname" . }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  type: {{ .svc.service.type }}
  selector:
    {{- include "switchboard.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .svc.port }}
      targetPort: http
{{- end -}}

{{- define "switchboard.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "switchboard.fullname" . }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "switchboard.fullname" . }}
  minReplicas: {{ .svc.autoscaling.minReplicas }}
  maxReplicas: {{ .svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .svc.autoscaling.targetCPUUtilizationPercentage }}
{{- end -}}

{{- define "switchboard.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "switchboard.fullname" . }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "switchboard.selectorLabels" . | nindent 6 }}
{{- end -}}
