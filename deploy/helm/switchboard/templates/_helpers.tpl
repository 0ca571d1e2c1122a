{{/*
Shared named templates. Every service of `.Values.services` is rendered through them with a context
dict: {root: $ (the chart's top-level context), name: <service key>, svc: <its values>}.
*/}}

{{- define "switchboard.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret the chart writes from install-time values (only when some are given). */}}
{{- define "switchboard.secretName" -}}
{{- printf "%s-secrets" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Credentials the chart can hold: the values key under `secrets`, and its env/Secret key name. */}}
{{- define "switchboard.credentialKeys" -}}
adminToken: ADMIN_TOKEN
openaiApiKey: OPENAI_API_KEY
anthropicApiKey: ANTHROPIC_API_KEY
{{- end -}}

{{/* The key → value pairs of the chart's own Secret (empty when every credential comes from elsewhere). */}}
{{- define "switchboard.secretData" -}}
{{- $v := .Values -}}
{{- if not $v.secrets.existingSecret -}}
{{- range $field, $key := include "switchboard.credentialKeys" . | fromYaml -}}
{{- with index $v.secrets $field }}
{{ $key }}: {{ . | b64enc | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $v.postgresql.url (not $v.postgresql.existingSecret) }}
DATABASE_URL: {{ $v.postgresql.url | b64enc | quote }}
{{- end -}}
{{- end -}}

{{/* A service's image reference: its own repository/tag, else <image.repository>/<name>:<tag or appVersion>. */}}
{{- define "switchboard.image" -}}
{{- $v := .root.Values -}}
{{- printf "%s:%s" (.svc.image.repository | default (printf "%s/%s" $v.image.repository .name)) (.svc.image.tag | default $v.image.tag | default .root.Chart.AppVersion) | quote -}}
{{- end -}}

{{/* The variable holding a database service's URL, e.g. CATALOG_DATABASE_URL. */}}
{{- define "switchboard.databaseEnv" -}}
{{- $v := .root.Values -}}
- name: {{ printf "%s_DATABASE_URL" (upper .name) }}
  valueFrom:
    secretKeyRef:
      {{- if $v.postgresql.existingSecret }}
      name: {{ $v.postgresql.existingSecret | quote }}
      key: {{ $v.postgresql.existingSecretKey | quote }}
      {{- else }}
      name: {{ .secretName | quote }}
      key: DATABASE_URL
      {{- end }}
{{- end -}}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "switchboard.labels" -}}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/component: {{ .name }}
app.kubernetes.io/part-of: switchboard
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
Refuse a configuration that cannot work, at install time rather than as a crash-looping pod.
Included once, from services.yaml.
*/}}
{{- define "switchboard.validate" -}}
{{- $v := .Values -}}
{{- $inline := or $v.secrets.adminToken $v.secrets.openaiApiKey $v.secrets.anthropicApiKey -}}
{{- if and $v.secrets.existingSecret $inline -}}
{{- fail "secrets: give either existingSecret or the credential values (adminToken, openaiApiKey, anthropicApiKey), not both" -}}
{{- end -}}
{{- if and $v.postgresql.existingSecret $v.postgresql.url -}}
{{- fail "postgresql: give either existingSecret or url, not both" -}}
{{- end -}}
{{- if not (or $v.nats.cluster.enabled $v.nats.external.url $v.nats.external.existingSecret) -}}
{{- fail "nats: set nats.external.url or nats.external.existingSecret, or enable nats.cluster (NATS with JetStream is required)" -}}
{{- end -}}
{{- if and $v.nats.cluster.enabled (gt (int $v.nats.streamReplicas) (int $v.nats.cluster.replicas)) -}}
{{- fail (printf "nats.streamReplicas (%v) cannot exceed nats.cluster.replicas (%v): a stream has at most one replica per server" $v.nats.streamReplicas $v.nats.cluster.replicas) -}}
{{- end -}}
{{- range $name, $svc := $v.services -}}
{{- if $svc.enabled -}}
{{- if and (has "adminToken" $svc.secrets) (not (or $v.secrets.existingSecret $v.secrets.adminToken)) -}}
{{- fail (printf "services.%s needs the admin token: set secrets.existingSecret (a Secret with key ADMIN_TOKEN) or give secrets.adminToken at install time" $name) -}}
{{- end -}}
{{- if and $svc.database (not (or $v.postgresql.existingSecret $v.postgresql.url)) -}}
{{- fail (printf "services.%s needs PostgreSQL: set postgresql.existingSecret (recommended) or give postgresql.url at install time" $name) -}}
{{- end -}}
{{- if and $svc.drainEnv (hasKey $svc.env $svc.drainEnv) -}}
{{- fail (printf "services.%s.env.%s: set services.%s.drainSeconds instead (the grace period is derived from it)" $name $svc.drainEnv $name) -}}
{{- end -}}
{{- if and $svc.portEnv (hasKey $svc.env $svc.portEnv) -}}
{{- fail (printf "services.%s.env.%s: set services.%s.port instead (the probes use it)" $name $svc.portEnv $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with $v.secrets.adminToken -}}
{{- if lt (len .) 24 -}}
{{- fail "secrets.adminToken must be a random secret of at least 24 characters (the gateway refuses less in production)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Where a runner finds the MCP servers' Secret (values `mcp`), mounted as files. */}}
{{- define "switchboard.mcpDir" -}}
/etc/switchboard/mcp
{{- end -}}

{{/* An env entry for one of nats/redis: its existing Secret key, else its plain URL, else nothing. */}}
{{- define "switchboard.urlEnv" -}}
{{- if .cfg.existingSecret }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .cfg.existingSecret | quote }}
      key: {{ .cfg.existingSecretKey | quote }}
{{- else if .cfg.url }}
- name: {{ .env }}
  value: {{ .cfg.url | quote }}
{{- end }}
{{- end -}}

{{/* The container's environment: shared settings, connections, credentials, then the service's own. */}}
{{- define "switchboard.env" -}}
{{- $v := .root.Values -}}
{{- $svc := .svc -}}
{{- if $svc.sharedEnv }}
{{- include "switchboard.nats.env" . }}
- name: SWITCHBOARD_NAMESPACE
  value: {{ $v.nats.namespace | quote }}
- name: NATS_STREAM_REPLICAS
  value: {{ $v.nats.streamReplicas | quote }}
- name: SWITCHBOARD_ENV
  value: production
- name: LOG_LEVEL
  value: {{ $v.logLevel | quote }}
{{- with $v.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if $svc.portEnv }}
- name: {{ $svc.portEnv }}
  value: {{ $svc.port | quote }}
{{- end }}
{{- if $svc.drainEnv }}
- name: {{ $svc.drainEnv }}
  value: {{ $svc.drainSeconds | quote }}
{{- end }}
{{- if $svc.redis }}
{{- include "switchboard.urlEnv" (dict "env" "REDIS_URL" "cfg" $v.redis) }}
{{- end }}
{{- if $svc.database }}
{{ include "switchboard.databaseEnv" (dict "root" .root "name" .name "secretName" (include "switchboard.secretName" .root)) }}
{{- /* The migration Job migrates (templates/migrations.yaml); the pods only wait for their schema. */}}
- name: {{ printf "%s_MIGRATE_ON_START" (upper .name) }}
  value: {{ (not $v.migrations.enabled) | toString | quote }}
{{- end }}
{{- $keys := include "switchboard.credentialKeys" .root | fromYaml }}
{{- range $field := $svc.secrets }}
{{- $key := index $keys $field }}
{{- if $v.secrets.existingSecret }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.secrets.existingSecret | quote }}
      key: {{ $key }}
      {{- /* Only the admin token is mandatory: a deployment may use one provider, or none (fake LLM). */}}
      optional: {{ ne $field "adminToken" }}
{{- else if index $v.secrets $field }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" $.root | quote }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- if and (eq .name "runner") $v.services.fakellm.enabled }}
{{- $fake := printf "http://%s:%v" (include "switchboard.fullname" (dict "root" .root "name" "fakellm")) $v.services.fakellm.port }}
{{- if not (hasKey $svc.env "OPENAI_BASE_URL") }}
- name: OPENAI_BASE_URL
  value: {{ printf "%s/v1" $fake | quote }}
{{- end }}
{{- if not (hasKey $svc.env "ANTHROPIC_BASE_URL") }}
- name: ANTHROPIC_BASE_URL
  value: {{ $fake | quote }}
{{- end }}
{{- end }}
{{- if and (eq .name "runner") $v.mcp.existingSecret }}
- name: RUNNER_MCP_SERVERS_FILE
  value: {{ printf "%s/%s" (include "switchboard.mcpDir" .) $v.mcp.key | quote }}
{{- end }}
{{- range $key := keys $svc.env | sortAlpha }}
- name: {{ $key }}
  value: {{ index $svc.env $key | quote }}
{{- end }}
{{- with $svc.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "switchboard.deployment" -}}
{{- $svc := .svc -}}
{{- $v := .root.Values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "switchboard.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  {{- if not $svc.autoscaling.enabled }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "switchboard.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "switchboard.labels" . | nindent 8 }}
      annotations:
        {{- /* Roll the pods when the chart's own Secret changes. */}}
        checksum/secret: {{ include "switchboard.secretData" .root | sha256sum }}
        {{- if and $v.metrics.podAnnotations $svc.metrics }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $svc.port | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      # Longer than the service's own drain (plus the pre-stop wait), so work under way can finish
      # before the kill.
      terminationGracePeriodSeconds: {{ add $svc.preStopSeconds $svc.drainSeconds 15 }}
      containers:
        - name: {{ .name }}
          image: {{ include "switchboard.image" . }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: [python, -m, {{ $svc.module | quote }}]
          {{- with $svc.args }}
          args:
            {{- range . }}
            - {{ . | quote }}
            {{- end }}
          {{- end }}
          env:
            {{- include "switchboard.env" . | trim | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ $svc.port }}
              protocol: TCP
          # Start-up may wait for NATS and (billing, catalog) for the schema the migration Job writes:
          # liveness waits for it; /healthz answers meanwhile and /readyz says what is missing (the
          # gateway's port opens once it has reached NATS: this probe gives it two minutes).
          startupProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          # Ready only while NATS and (billing, catalog) the database answer; Redis is optional, never a check.
          readinessProbe:
            httpGet: {path: {{ $svc.readinessPath }}, port: http}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          {{- if $svc.preStopSeconds }}
          lifecycle:
            preStop:
              exec:
                command: [sleep, {{ $svc.preStopSeconds | quote }}]
          {{- end }}
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if and (eq .name "runner") $v.mcp.existingSecret }}
            - name: mcp-servers
              mountPath: {{ include "switchboard.mcpDir" . }}
              readOnly: true
            {{- end }}
            {{- with $svc.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- if and (eq .name "runner") $v.mcp.existingSecret }}
        - name: mcp-servers
          secret:
            secretName: {{ $v.mcp.existingSecret | quote }}
            items: [{key: {{ $v.mcp.key | quote }}, path: {{ $v.mcp.key | quote }}}]
        {{- end }}
        {{- with $svc.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{- define "switchboard.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "switchboard.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
  {{- with .svc.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .svc.service.type }}
  selector:
    {{- include "switchboard.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .svc.port }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{- define "switchboard.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "switchboard.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
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

{{- /* KEDA instead of a CPU HPA (the runner): scale on the RUNS consumer's backlog, read from the
NATS server's monitoring endpoint. Streams run I/O-bound, so CPU says little about a runner's load. */ -}}
{{- define "switchboard.scaledobject" -}}
{{- $keda := .svc.autoscaling.keda -}}
{{- $ns := .root.Values.nats.namespace -}}
{{- $monitor := $keda.natsMonitoringEndpoint -}}
{{- if not $monitor -}}
{{- if .root.Values.nats.cluster.enabled -}}
{{- $monitor = printf "%s.%s.svc:8222" (include "switchboard.nats.fullname" .root) .root.Release.Namespace -}}
{{- else -}}
{{- fail "services.runner.autoscaling.keda.natsMonitoringEndpoint: set it to your NATS server's monitoring endpoint (host:port, fully qualified: KEDA resolves it from its own namespace)" -}}
{{- end -}}
{{- end -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "switchboard.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "switchboard.fullname" . }}
  minReplicaCount: {{ .svc.autoscaling.minReplicas }}
  maxReplicaCount: {{ .svc.autoscaling.maxReplicas }}
  triggers:
    - type: nats-jetstream
      metadata:
        natsServerMonitoringEndpoint: {{ $monitor | quote }}
        account: {{ $keda.account | quote }}
        stream: {{ if $ns }}{{ printf "%s_RUNS" $ns | quote }}{{ else }}"RUNS"{{ end }}
        consumer: "runners"
        lagThreshold: {{ $keda.pendingRunsPerReplica | quote }}
{{- end -}}

{{- define "switchboard.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "switchboard.fullname" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "switchboard.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* More than one pod, now or at the autoscaler's floor: a voluntary disruption may take only some
(values `podDisruptionBudget`). */}}
{{- define "switchboard.wantsPdb" -}}
{{- if .root.Values.podDisruptionBudget.enabled -}}
{{- if .svc.autoscaling.enabled -}}
{{- if gt (int .svc.autoscaling.minReplicas) 1 }}true{{ end -}}
{{- else if gt (int .svc.replicas) 1 }}true{{ end -}}
{{- end -}}
{{- end -}}
