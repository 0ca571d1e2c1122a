{{/*
NATS: the services' users and their permissions, and the optional in-chart NATS cluster.

The permissions are libs/contracts' (contracts.permissions), written into files/nats-permissions.yaml
with the namespace left as NAMESPACE; here it becomes nats.namespace (or goes, with its separator).
*/}}

{{/* The in-chart NATS cluster's name (its StatefulSet, its client Service; the headless one adds -headless). */}}
{{- define "switchboard.nats.fullname" -}}
{{- printf "%s-nats" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret of the services' NATS passwords (one key per service): the operator's or the chart's. */}}
{{- define "switchboard.nats.usersSecret" -}}
{{- .Values.nats.auth.existingSecret | default (printf "%s-nats-users" .Release.Name | trunc 63 | trimSuffix "-") -}}
{{- end -}}

{{/* The Secret holding the NATS server's authorization block (auth.conf). */}}
{{- define "switchboard.nats.authSecret" -}}
{{- printf "%s-nats-auth" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A service's NATS user name: <release>-<service>, unique per installation on a shared NATS. */}}
{{- define "switchboard.nats.user" -}}
{{- include "switchboard.fullname" . -}}
{{- end -}}

{{/* The variable the NATS server reads a service's password from, when the operator's Secret holds them. */}}
{{- define "switchboard.nats.passwordVar" -}}
{{- printf "SWITCHBOARD_%s_NATS_PASSWORD" (upper .) -}}
{{- end -}}

{{/* The URL the services connect to: the in-chart cluster's Service, else nats.external.url. */}}
{{- define "switchboard.nats.url" -}}
{{- if .Values.nats.cluster.enabled -}}
{{- printf "nats://%s:4222" (include "switchboard.nats.fullname" .) -}}
{{- else -}}
{{- .Values.nats.external.url -}}
{{- end -}}
{{- end -}}

{{/* service → {publish: {allow, deny}, subscribe: {allow, deny}} under nats.namespace, as YAML. */}}
{{- define "switchboard.nats.permissions" -}}
{{- $text := .Files.Get "files/nats-permissions.yaml" -}}
{{- with .Values.nats.namespace -}}
{{- $text = replace "NAMESPACE" . $text -}}
{{- else -}}
{{- $text = $text | replace "NAMESPACE." "" | replace "NAMESPACE_" "" -}}
{{- end -}}
{{- $text -}}
{{- end -}}

{{/* The enabled services that connect to NATS and so get a user: those the permissions name. */}}
{{- define "switchboard.nats.services" -}}
{{- $perms := include "switchboard.nats.permissions" . | fromYaml -}}
{{- range $name := keys $perms | sortAlpha -}}
{{- $svc := index $.Values.services $name | default dict -}}
{{- if $svc.enabled }}
- {{ $name }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* One list of subjects in NATS configuration syntax: ["a", "b"]. */}}
{{- define "switchboard.nats.list" -}}
[{{ range $i, $s := . }}{{ if $i }}, {{ end }}{{ $s | quote }}{{ end }}]
{{- end -}}

{{/*
The NATS server's authorization block: one user per service with its publish/subscribe allow and deny
lists. Context: {root, passwords}; passwords maps a service to its password (quoted into the file), or is
empty when the operator's Secret holds them: then each password is a variable the server reads from its
environment ($SWITCHBOARD_<SERVICE>_NATS_PASSWORD).
*/}}
{{- define "switchboard.nats.authConfig" -}}
{{- $root := .root -}}
{{- $perms := include "switchboard.nats.permissions" $root | fromYaml -}}
# Switchboard's NATS users ({{ $root.Release.Name }}): include this file in the NATS server configuration.
authorization {
  users = [
{{- range $name := include "switchboard.nats.services" $root | fromYamlArray }}
{{- $p := index $perms $name }}
    {
      user: {{ include "switchboard.nats.user" (dict "root" $root "name" $name) | quote }}
      {{- if $.passwords }}
      password: {{ index $.passwords $name | quote }}
      {{- else }}
      password: ${{ include "switchboard.nats.passwordVar" $name }}
      {{- end }}
      permissions: {
        publish: {
          allow: {{ include "switchboard.nats.list" $p.publish.allow }}
          {{- with $p.publish.deny }}
          deny: {{ include "switchboard.nats.list" . }}
          {{- end }}
        }
        subscribe: {
          allow: {{ include "switchboard.nats.list" $p.subscribe.allow }}
          {{- with $p.subscribe.deny }}
          deny: {{ include "switchboard.nats.list" . }}
          {{- end }}
        }
        {{- if $p.allow_responses }}
        allow_responses: true
        {{- end }}
      }
    }
{{- end }}
  ]
}
{{- end -}}

{{/* A service's NATS connection: URL (nats.external's Secret or URL, or the in-chart cluster), user and password. */}}
{{- define "switchboard.nats.env" -}}
{{- $v := .root.Values -}}
{{- if $v.nats.cluster.enabled }}
- name: NATS_URL
  value: {{ include "switchboard.nats.url" .root | quote }}
{{- else }}
{{- include "switchboard.urlEnv" (dict "env" "NATS_URL" "cfg" $v.nats.external) }}
{{- end }}
{{- if $v.nats.auth.enabled }}
- name: NATS_USER
  value: {{ include "switchboard.nats.user" . | quote }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.nats.usersSecret" .root | quote }}
      key: {{ .name | quote }}
{{- end }}
{{- end -}}
