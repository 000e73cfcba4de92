{{/*
Chart name, overridable.
*/}}
{{- define "bucket-registry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of every resource. Not derived from the release: Gen3 services address
each other by fixed names (Fence's client defaults to http://bucket-registry-service).
*/}}
{{- define "bucket-registry.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "bucket-registry.name" . }}
{{- end }}
{{- end }}

{{- define "bucket-registry.serviceName" -}}
{{- printf "%s-service" (include "bucket-registry.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bucket-registry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. `app` is the label Gen3 NetworkPolicies select on.
*/}}
{{- define "bucket-registry.labels" -}}
helm.sh/chart: {{ include "bucket-registry.chart" . }}
app.kubernetes.io/name: {{ include "bucket-registry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gen3
app: {{ include "bucket-registry.name" . }}
{{- end }}

{{/*
Selector of the API pods. Job pods carry other `app`/component values so that
neither the Service nor the API NetworkPolicy ever selects them.
*/}}
{{- define "bucket-registry.selectorLabels" -}}
app: {{ include "bucket-registry.name" . }}
app.kubernetes.io/name: {{ include "bucket-registry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Pod labels of the one-off and scheduled jobs; call with (dict "ctx" $ "component" "migrate").
*/}}
{{- define "bucket-registry.jobPodLabels" -}}
app: gen3job
app.kubernetes.io/name: {{ include "bucket-registry.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "bucket-registry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-sa" (include "bucket-registry.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bucket-registry.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{- define "bucket-registry.configMapName" -}}
{{- printf "%s-config" (include "bucket-registry.fullname" .) }}
{{- end }}

{{/*
Database credentials: the operator's Secret, or the one this chart renders.
*/}}
{{- define "bucket-registry.dbSecretName" -}}
{{- if .Values.postgres.existingSecret }}
{{- .Values.postgres.existingSecret }}
{{- else }}
{{- printf "%s-dbcreds" (include "bucket-registry.fullname" .) }}
{{- end }}
{{- end }}

{{- define "bucket-registry.dbSecretKey" -}}
{{- if .Values.postgres.existingSecret }}
{{- .Values.postgres.existingSecretKey | default "database-url" }}
{{- else -}}
database-url
{{- end }}
{{- end }}

{{/*
"true" when this release creates the service database and role itself.
*/}}
{{- define "bucket-registry.dbCreate" -}}
{{- if .Values.postgres.existingSecret -}}
false
{{- else if kindIs "bool" .Values.postgres.dbCreate -}}
{{- .Values.postgres.dbCreate }}
{{- else -}}
{{- .Values.global.postgres.dbCreate | default false }}
{{- end }}
{{- end }}

{{- define "bucket-registry.dbHost" -}}
{{- if .Values.postgres.host }}
{{- .Values.postgres.host }}
{{- else if .Values.global.postgres.master.host }}
{{- .Values.global.postgres.master.host }}
{{- else if .Values.global.dev }}
{{- printf "%s-postgresql" .Release.Name }}
{{- else }}
{{- fail "postgres.host (or global.postgres.master.host, or postgres.existingSecret) is required outside dev mode" }}
{{- end }}
{{- end }}

{{- define "bucket-registry.dbUser" -}}
{{- coalesce .Values.postgres.user .Values.postgres.username "bucket_registry" }}
{{- end }}

{{/*
Service password: values, else the one already stored (so upgrades keep it),
else a fresh random one when this release creates the role.
*/}}
{{- define "bucket-registry.dbPassword" -}}
{{- $stored := "" }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "bucket-registry.dbSecretName" .) }}
{{- if and $secret $secret.data (hasKey $secret.data "password") }}
{{- $stored = index $secret.data "password" | b64dec }}
{{- end }}
{{- if .Values.postgres.password }}
{{- .Values.postgres.password }}
{{- else if $stored }}
{{- $stored }}
{{- else if eq (include "bucket-registry.dbCreate" .) "true" }}
{{- randAlphaNum 32 }}
{{- else }}
{{- fail "postgres.password or postgres.existingSecret is required when the chart does not create the database" }}
{{- end }}
{{- end }}

{{/*
The env entry every container talking to the database uses: the URL only ever
travels through a Secret.
*/}}
{{- define "bucket-registry.databaseUrlEnv" -}}
- name: BUCKET_REGISTRY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "bucket-registry.dbSecretName" . }}
      key: {{ include "bucket-registry.dbSecretKey" . }}
{{- end }}

{{/*
Whether pods get a Kubernetes API token: the k8s secrets backend reads Secrets
through the API and Vault's Kubernetes auth logs in with that token. Otherwise
a stolen token would be pure attack surface.
*/}}
{{- define "bucket-registry.k8sRbac" -}}
{{- if or (eq .Values.secretsBackend.type "k8s") .Values.secretsBackend.k8s.rbac.create -}}
true
{{- else -}}
false
{{- end }}
{{- end }}

{{- define "bucket-registry.secretsNamespace" -}}
{{- .Values.secretsBackend.k8s.rbac.secretsNamespace.name | default (printf "%s-bucket-secrets" (.Release.Namespace | default "default")) }}
{{- end }}

{{- define "bucket-registry.automountToken" -}}
{{- if kindIs "bool" .Values.serviceAccount.automountToken -}}
{{- .Values.serviceAccount.automountToken }}
{{- else if or (eq (include "bucket-registry.k8sRbac" .) "true") (eq .Values.secretsBackend.type "vault") .Values.secretsBackend.vault.addr -}}
true
{{- else -}}
false
{{- end }}
{{- end }}

{{/*
Kubernetes Secrets mount mode for file:// secrets: on when Secrets are listed or the
default backend is file.
*/}}
{{- define "bucket-registry.fileSecretsEnabled" -}}
{{- if or (eq .Values.secretsBackend.type "file") .Values.secretsBackend.file.secrets -}}
true
{{- else -}}
false
{{- end }}
{{- end }}

{{- define "bucket-registry.fenceConfigEnabled" -}}
{{- if and .Values.fenceConfig.existingSecret .Values.fenceConfig.existingConfigMap }}
{{- fail "fenceConfig: set existingSecret or existingConfigMap, not both" }}
{{- end }}
{{- if or .Values.fenceConfig.existingSecret .Values.fenceConfig.existingConfigMap -}}
true
{{- else -}}
false
{{- end }}
{{- end }}

{{/*
Volumes of the API pods and the drift-check pods. Call with
(dict "ctx" $ "fenceConfig" true|false): only the API pods serve the fallback,
so only they get Fence's config (which may hold keys) mounted.
*/}}
{{/*
The cluster CA for the in-cluster service token issuer: "true" when serviceTokens.clusterCA is,
or (null) when jwksUrl is the API server's own https://kubernetes.default.svc….
*/}}
{{- define "bucket-registry.clusterCA" -}}
{{- $t := .Values.serviceTokens }}
{{- if kindIs "bool" $t.clusterCA -}}
{{- and $t.clusterCA (ne ($t.jwksUrl | default "") "") }}
{{- else -}}
{{- hasPrefix "https://kubernetes.default.svc" ($t.jwksUrl | default "") }}
{{- end }}
{{- end }}

{{- define "bucket-registry.serviceTokenCaFile" -}}
{{- if .Values.serviceTokens.caFile -}}
{{- .Values.serviceTokens.caFile }}
{{- else if eq (include "bucket-registry.clusterCA" .) "true" -}}
/etc/bucket-registry/cluster-ca/ca.crt
{{- end }}
{{- end }}

{{- define "bucket-registry.volumes" -}}
{{- $v := .ctx.Values }}
# The root filesystem is read-only; Python, botocore and uvicorn still need a scratch dir.
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: {{ $v.tmpSizeLimit }}
{{- if .fenceConfig }}
{{- if $v.fenceConfig.existingSecret }}
- name: fence-config
  secret:
    secretName: {{ $v.fenceConfig.existingSecret }}
    items:
      - key: {{ $v.fenceConfig.key }}
        path: fence-config.yaml
{{- else if $v.fenceConfig.existingConfigMap }}
- name: fence-config
  configMap:
    name: {{ $v.fenceConfig.existingConfigMap }}
    items:
      - key: {{ $v.fenceConfig.key }}
        path: fence-config.yaml
{{- end }}
{{- end }}
{{- range $i, $name := $v.secretsBackend.file.secrets }}
- name: file-secret-{{ $i }}
  secret:
    secretName: {{ $name }}
    # Owner and group (fsGroup) read only.
    defaultMode: 0440
{{- end }}
{{- if and (eq (include "bucket-registry.clusterCA" .ctx) "true") (not $v.serviceTokens.caFile) }}
- name: cluster-ca
  configMap:
    name: kube-root-ca.crt
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "bucket-registry.volumeMounts" -}}
{{- $v := .ctx.Values }}
- name: tmp
  mountPath: /tmp
{{- if and .fenceConfig (eq (include "bucket-registry.fenceConfigEnabled" .ctx) "true") }}
- name: fence-config
  mountPath: {{ $v.fenceConfig.mountPath }}
  readOnly: true
{{- end }}
{{- range $i, $name := $v.secretsBackend.file.secrets }}
- name: file-secret-{{ $i }}
  mountPath: {{ printf "%s/%s" (trimSuffix "/" $v.secretsBackend.file.mountPath) $name }}
  readOnly: true
{{- end }}
{{- if and (eq (include "bucket-registry.clusterCA" .ctx) "true") (not $v.serviceTokens.caFile) }}
- name: cluster-ca
  mountPath: /etc/bucket-registry/cluster-ca
  readOnly: true
{{- end }}
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Environment of the containers that run the service code with its full configuration.
*/}}
{{- define "bucket-registry.env" -}}
{{ include "bucket-registry.databaseUrlEnv" . }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Address ranges egress to the internet never reaches (RFC 6890 special-purpose space that is
not the public internet): "this network", private, shared (CGNAT), loopback, link-local
(cloud metadata), IETF protocol assignments, documentation, benchmarking, multicast and
reserved; for IPv6 loopback, unspecified, IPv4-mapped, unique-local, link-local, site-local,
documentation and multicast.
*/}}
{{- define "bucket-registry.blockedIpv4" -}}
- 0.0.0.0/8
- 10.0.0.0/8
- 100.64.0.0/10
- 127.0.0.0/8
- 169.254.0.0/16
- 172.16.0.0/12
- 192.0.0.0/24
- 192.0.2.0/24
- 192.168.0.0/16
- 198.18.0.0/15
- 198.51.100.0/24
- 203.0.113.0/24
- 224.0.0.0/4
- 240.0.0.0/4
{{- end }}

{{- define "bucket-registry.blockedIpv6" -}}
- ::/128
- ::1/128
- ::ffff:0:0/96
- 64:ff9b::/96
- 2001:db8::/32
- fc00::/7
- fe80::/10
- fec0::/10
- ff00::/8
{{- end }}

{{/*
Egress shared by the API pods and the job pods.
*/}}
{{- define "bucket-registry.commonEgress" -}}
# DNS, to whatever resolver the node uses (kube-dns or a node-local cache).
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
# PostgreSQL.
- ports:
    - protocol: TCP
      port: {{ .Values.postgres.port | int }}
  {{- with .Values.global.netPolicy.dbSubnets }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
# HTTPS to cloud APIs: STS, Secrets Manager, S3, GCS, IAM credentials. Destinations
# are not fixed IPs, so only the port is pinned, and every range that is not the public
# internet is cut out: cloud metadata (link-local), loopback, private, shared and
# unique-local addresses are reached only through netPolicy.egressAllowedCidrs.
- ports:
    - protocol: TCP
      port: 443
  to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          {{- toYaml (include "bucket-registry.blockedIpv4" . | fromYamlArray) | nindent 10 }}
    - ipBlock:
        cidr: ::/0
        except:
          {{- toYaml (include "bucket-registry.blockedIpv6" . | fromYamlArray) | nindent 10 }}
{{- range .Values.netPolicy.egressAllowedCidrs }}
{{- if kindIs "string" . }}
- to:
    - ipBlock:
        cidr: {{ . }}
{{- else }}
- to:
    - ipBlock:
        cidr: {{ .cidr }}
  {{- with .ports }}
  ports:
    {{- range . }}
    - protocol: TCP
      port: {{ . | int }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
{{- if .Values.secretsBackend.vault.addr }}
- ports:
    - protocol: TCP
      port: {{ .Values.secretsBackend.vault.port | int }}
{{- end }}
{{- with .Values.netPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}
