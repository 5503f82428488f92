{{/* Names, labels and the environment every precog container shares. */}}

{{- define "precog.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "precog.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "precog.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "precog.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "precog.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "precog.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
precog.io/namespace: {{ .Values.namespace | quote }}
{{- end -}}

{{/* Selector labels of one component (worker, serve, setup). */}}
{{- define "precog.selector" -}}
app.kubernetes.io/name: {{ include "precog.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "precog.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The consumer group KEDA reads: the score agent's batch group (services/agents/score.py
     score_group = Settings.group("score")). */}}
{{- define "precog.scoreGroup" -}}
{{- printf "precog-%s-score" .Values.namespace -}}
{{- end -}}

{{/* The spec's YAML: spec.inline, or pipelines/specs/<spec.name>.yaml (specs/ links there). */}}
{{- define "precog.specBody" -}}
{{- $file := printf "specs/%s.yaml" .Values.spec.name -}}
{{- $body := .Values.spec.inline | default (.Files.Get $file) -}}
{{- if not $body -}}
{{- fail (printf "spec.name %q: no %s in the chart and no spec.inline" .Values.spec.name $file) -}}
{{- end -}}
{{- $body -}}
{{- end -}}

{{/* The events topic: {namespace}.{the spec's event.topic}. */}}
{{- define "precog.eventsTopic" -}}
{{- $spec := include "precog.specBody" . | fromYaml -}}
{{- $topic := dig "event" "topic" "" $spec -}}
{{- if not $topic -}}
{{- fail (printf "spec %q has no event.topic" .Values.spec.name) -}}
{{- end -}}
{{- printf "%s.%s" .Values.namespace $topic -}}
{{- end -}}

{{- define "precog.specFile" -}}
{{- printf "/etc/precog/spec/%s.yaml" .Values.spec.name -}}
{{- end -}}

{{/* Every credential precog reads (precog/settings.py: the SecretStr fields and the user
     names beside them), as env var -> key in the Secret secrets.existingSecret. Each is
     optional: a key the Secret lacks leaves the setting unset. tests/unit/test_helm_chart.py
     checks this list against the settings. */}}
{{- define "precog.secretKeys" -}}
PRECOG_KAFKA_SASL_USERNAME: kafka-sasl-username
PRECOG_KAFKA_SASL_PASSWORD: kafka-sasl-password
PRECOG_REDIS_USERNAME: redis-username
PRECOG_REDIS_PASSWORD: redis-password
PRECOG_ELASTICSEARCH_USERNAME: elasticsearch-username
PRECOG_ELASTICSEARCH_PASSWORD: elasticsearch-password
PRECOG_ELASTICSEARCH_API_KEY: elasticsearch-api-key
PRECOG_KIBANA_USERNAME: kibana-username
PRECOG_KIBANA_PASSWORD: kibana-password
PRECOG_KIBANA_API_KEY: kibana-api-key
PRECOG_SCHEMA_REGISTRY_USERNAME: schema-registry-username
PRECOG_SCHEMA_REGISTRY_PASSWORD: schema-registry-password
PRECOG_SERVE_API_KEYS: serve-api-keys
{{- end -}}

{{/* TLS files: setting -> values key under tls.files; mounted from tls.existingSecret. */}}
{{- define "precog.tlsFiles" -}}
PRECOG_KAFKA_SSL_CAFILE: kafkaCafile
PRECOG_KAFKA_SSL_CERTFILE: kafkaCertfile
PRECOG_KAFKA_SSL_KEYFILE: kafkaKeyfile
PRECOG_REDIS_SSL_CA_CERTS: redisCaCerts
PRECOG_ELASTICSEARCH_CA_CERTS: elasticsearchCaCerts
PRECOG_KIBANA_CA_CERTS: kibanaCaCerts
PRECOG_SCHEMA_REGISTRY_SSL_CAFILE: schemaRegistryCafile
{{- end -}}

{{- define "precog.env" -}}
- name: PRECOG_NAMESPACE
  value: {{ .Values.namespace | quote }}
- name: PRECOG_SPEC
  value: {{ include "precog.specFile" . | quote }}
- name: PRECOG_REGISTRY_DIR
  value: /app/.precog/registry
- name: PRECOG_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required" .Values.kafka.bootstrap | quote }}
- name: PRECOG_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- with .Values.kafka.saslMechanism }}
- name: PRECOG_KAFKA_SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
- name: PRECOG_KAFKA_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: PRECOG_KAFKA_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: PRECOG_REDIS_URL
  value: {{ required "redis.url is required" .Values.redis.url | quote }}
- name: PRECOG_ELASTICSEARCH_URL
  value: {{ required "elasticsearch.url is required" .Values.elasticsearch.url | quote }}
{{- with .Values.kibana.url }}
- name: PRECOG_KIBANA_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.schemaRegistry.url }}
- name: PRECOG_SCHEMA_REGISTRY_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.schemaRegistry.confluentNamespaces }}
- name: PRECOG_SCHEMA_REGISTRY_CONFLUENT_NAMESPACES
  value: {{ join "," . | quote }}
{{- end }}
{{- $tls := .Values.tls }}
{{- range $env, $key := include "precog.tlsFiles" . | fromYaml }}
{{- with index $tls.files $key }}
- name: {{ $env }}
  value: {{ printf "/etc/precog/tls/%s" . | quote }}
{{- end }}
{{- end }}
{{- if .Values.secrets.existingSecret }}
{{- $secret := .Values.secrets.existingSecret }}
{{- range $env, $key := include "precog.secretKeys" . | fromYaml }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Volumes and mounts of the spec, the TLS files and the model registry. */}}
{{- define "precog.volumeMounts" -}}
- name: spec
  mountPath: /etc/precog/spec
  readOnly: true
{{- if .Values.tls.existingSecret }}
- name: tls
  mountPath: /etc/precog/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "precog.tlsVolume" -}}
{{- if .Values.tls.existingSecret }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
{{- end }}
{{- end -}}

{{- define "precog.registryVolume" -}}
- name: registry
{{- if .Values.registry.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.registry.existingClaim }}
    readOnly: true
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* The pipeline spec ConfigMap's data (the worker's and the setup hook's copy). */}}
{{- define "precog.specData" -}}
{{ .Values.spec.name }}.yaml: |
{{ include "precog.specBody" . | indent 2 }}
{{- end -}}

{{- define "precog.podSecurity" -}}
runAsNonRoot: true
runAsUser: 999
fsGroup: 999
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "precog.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .Values.securityContext.readOnlyRootFilesystem }}
capabilities:
  drop: [ALL]
{{- end -}}
