{{/* Names ------------------------------------------------------------------ */}}

{{- define "fxtriage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fxtriage.fullname" -}}
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

{{/* The name of a component's objects: (dict "root" $ "component" "ingest") */}}
{{- define "fxtriage.componentName" -}}
{{- printf "%s-%s" (include "fxtriage.fullname" .root | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "fxtriage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fxtriage.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------- */}}

{{- define "fxtriage.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "fxtriage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fxtriage
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* (dict "root" $ "component" "ingest") */}}
{{- define "fxtriage.componentLabels" -}}
{{ include "fxtriage.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* (dict "root" $ "component" "ingest") */}}
{{- define "fxtriage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fxtriage.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Images and addresses ----------------------------------------------------- */}}

{{- define "fxtriage.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "fxtriage.gpuImage" -}}
{{- $gpu := .Values.inference.gpu.image -}}
{{- printf "%s:%s" $gpu.repository (default (default .Chart.AppVersion .Values.image.tag) $gpu.tag) -}}
{{- end -}}

{{/* An address to bind: (dict "root" $ "port" 8081); IPv6 in brackets. */}}
{{- define "fxtriage.bindAddress" -}}
{{- $host := .root.Values.listenAddress -}}
{{- if contains ":" $host -}}
{{- printf "[%s]:%v" $host .port -}}
{{- else -}}
{{- printf "%s:%v" $host .port -}}
{{- end -}}
{{- end -}}

{{/* Pod pieces --------------------------------------------------------------- */}}

{{- define "fxtriage.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "fxtriage.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The part of a pod spec every service shares (root context). */}}
{{- define "fxtriage.podCommon" -}}
serviceAccountName: {{ include "fxtriage.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "fxtriage.podSecurityContext" . | nindent 2 }}
{{- end -}}

{{/* nodeSelector, tolerations, affinity of a component: (dict "values" .Values.api) */}}
{{- define "fxtriage.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes on a named port: (dict "root" $ "values" .Values.api "port" "http") */}}
{{- define "fxtriage.probes" -}}
{{- $probes := mergeOverwrite (deepCopy .root.Values.probes) (deepCopy .values.probes) -}}
startupProbe:
  httpGet:
    path: /health/live
    port: {{ .port }}
  periodSeconds: {{ $probes.startup.periodSeconds }}
  timeoutSeconds: {{ $probes.startup.timeoutSeconds }}
  failureThreshold: {{ $probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /health/live
    port: {{ .port }}
  periodSeconds: {{ $probes.liveness.periodSeconds }}
  timeoutSeconds: {{ $probes.liveness.timeoutSeconds }}
  failureThreshold: {{ $probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /health/ready
    port: {{ .port }}
  periodSeconds: {{ $probes.readiness.periodSeconds }}
  timeoutSeconds: {{ $probes.readiness.timeoutSeconds }}
  failureThreshold: {{ $probes.readiness.failureThreshold }}
{{- end -}}

{{/* The writable /tmp of every pod (TMPDIR): (dict "sizeLimit" "1Gi" "medium" "") */}}
{{- define "fxtriage.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .medium }}
    medium: {{ . }}
    {{- end }}
    sizeLimit: {{ .sizeLimit }}
{{- end -}}

{{- define "fxtriage.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Environment -------------------------------------------------------------- */}}

{{/* Every process: logs, traces, the temporary directory (root context). */}}
{{- define "fxtriage.env.common" -}}
- name: FXTRIAGE_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: FXTRIAGE_LOG
  value: {{ .Values.logging.filter | quote }}
{{- with .Values.otlp.endpoint }}
- name: FXTRIAGE_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: TMPDIR
  value: /tmp
{{- end -}}

{{/* Kafka: brokers, namespace, topics, properties with the SASL credentials
     of a Secret spliced in by Kubernetes' $(VAR) expansion (root context). */}}
{{- define "fxtriage.env.kafka" -}}
{{- $kafka := .Values.kafka -}}
- name: FXTRIAGE_KAFKA_BROKERS
  value: {{ $kafka.brokers | quote }}
- name: FXTRIAGE_NAMESPACE
  value: {{ .Values.deploymentNamespace | quote }}
- name: FXTRIAGE_TOPIC_PARTITIONS
  value: {{ $kafka.topicPartitions | quote }}
- name: FXTRIAGE_TOPIC_REPLICATION
  value: {{ $kafka.topicReplication | quote }}
{{- $properties := list -}}
{{- range $key := keys $kafka.properties | sortAlpha }}
{{- $properties = append $properties (printf "%s=%s" $key (toString (get $kafka.properties $key))) -}}
{{- end }}
{{- if $kafka.sasl.existingSecret }}
- name: SECRET_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret }}
      key: {{ $kafka.sasl.usernameKey }}
- name: SECRET_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret }}
      key: {{ $kafka.sasl.passwordKey }}
{{- $properties = append $properties "sasl.username=$(SECRET_KAFKA_SASL_USERNAME)" -}}
{{- $properties = append $properties "sasl.password=$(SECRET_KAFKA_SASL_PASSWORD)" -}}
{{- end }}
{{- if $kafka.propertiesSecret.name }}
- name: SECRET_KAFKA_PROPERTIES
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.propertiesSecret.name }}
      key: {{ $kafka.propertiesSecret.key }}
{{- $properties = append $properties "$(SECRET_KAFKA_PROPERTIES)" -}}
{{- end }}
{{- if $properties }}
- name: FXTRIAGE_KAFKA_PROPERTIES
  value: {{ join "," $properties | quote }}
{{- end }}
{{- end -}}

{{/* S3 (root context). */}}
{{- define "fxtriage.env.s3" -}}
{{- $s3 := .Values.s3 -}}
- name: FXTRIAGE_S3_BUCKET
  value: {{ $s3.bucket | quote }}
- name: FXTRIAGE_S3_REGION
  value: {{ $s3.region | quote }}
{{- with $s3.endpoint }}
- name: FXTRIAGE_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- if $s3.existingSecret }}
- name: FXTRIAGE_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.accessKeyIdKey }}
- name: FXTRIAGE_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.secretAccessKeyKey }}
{{- end }}
{{- end -}}

{{/* PostgreSQL: the whole connection string from the Secret, or a key=value
     string (tokio-postgres reads both) whose quoted user and password
     Kubernetes fills in from the Secret: (dict "root" $ "application" "fxtriage-api") */}}
{{- define "fxtriage.env.postgres" -}}
{{- $pg := .root.Values.postgres -}}
{{- $secret := .secret | default $pg.existingSecret -}}
{{- if $pg.urlKey }}
- name: FXTRIAGE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $pg.urlKey }}
{{- else }}
- name: SECRET_POSTGRES_USER
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $pg.usernameKey }}
- name: SECRET_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $pg.passwordKey }}
- name: FXTRIAGE_DATABASE_URL
  value: {{ printf "host=%s port=%v dbname=%s user='$(SECRET_POSTGRES_USER)' password='$(SECRET_POSTGRES_PASSWORD)' sslmode=%s application_name=%s" $pg.host $pg.port $pg.database $pg.sslmode .application | quote }}
{{- end }}
{{- end -}}

{{/* A component's own extra variables: (dict "values" .Values.api) */}}
{{- define "fxtriage.env.extra" -}}
{{- range .values.extraEnv }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end -}}

{{/* Checks that the schema cannot express. */}}
{{- define "fxtriage.validate" -}}
{{- if and (not .Values.postgres.urlKey) (not .Values.postgres.host) -}}
{{- fail "postgres.host: required unless postgres.urlKey names the Secret key holding the whole connection string" -}}
{{- end -}}
{{- $autoscaling := .Values.inference.autoscaling -}}
{{- if and $autoscaling.enabled (gt (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas)) -}}
{{- fail "inference.autoscaling: minReplicas is above maxReplicas" -}}
{{- end -}}
{{- if and $autoscaling.enabled (gt (int $autoscaling.maxReplicas) (int .Values.kafka.topicPartitions)) -}}
{{- fail (printf "inference.autoscaling.maxReplicas (%v) is above kafka.topicPartitions (%v): the extra consumers would get no partition" $autoscaling.maxReplicas .Values.kafka.topicPartitions) -}}
{{- end -}}
{{- if and .Values.api.ingress.enabled (not .Values.api.ingress.hosts) -}}
{{- fail "api.ingress.hosts: give at least one host when api.ingress.enabled" -}}
{{- end -}}
{{- if and .Values.ingest.http.ingress.enabled (not .Values.ingest.http.ingress.hosts) -}}
{{- fail "ingest.http.ingress.hosts: give at least one host when ingest.http.ingress.enabled" -}}
{{- end -}}
{{- $hours := .Values.monitoring.prometheusRule.workingHours -}}
{{- if ge (int $hours.startHour) (int $hours.endHour) -}}
{{- fail (printf "monitoring.prometheusRule.workingHours: startHour (%v) must be below endHour (%v)" $hours.startHour $hours.endHour) -}}
{{- end -}}
{{- if gt (int $hours.firstDay) (int $hours.lastDay) -}}
{{- fail (printf "monitoring.prometheusRule.workingHours: firstDay (%v) is after lastDay (%v)" $hours.firstDay $hours.lastDay) -}}
{{- end -}}
{{- end -}}

{{/* Objects ------------------------------------------------------------------ */}}

{{/* A Service: (dict "root" $ "component" "ingest" "name" "ingest-dicom"
     "service" .Values.ingest.dicom.service "portName" "dicom" "metrics" false) */}}
{{- define "fxtriage.service" -}}
{{- $service := .service -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "fxtriage.componentName" (dict "root" .root "component" .name) }}
  labels:
    {{- include "fxtriage.componentLabels" . | nindent 4 }}
    {{- if .metrics }}
    fxtriage.io/metrics: "true"
    {{- end }}
  {{- with $service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $service.type }}
  {{- if eq $service.type "LoadBalancer" }}
  {{- with $service.loadBalancerSourceRanges }}
  loadBalancerSourceRanges:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- if or (eq $service.type "LoadBalancer") (eq $service.type "NodePort") }}
  externalTrafficPolicy: {{ $service.externalTrafficPolicy }}
  {{- end }}
  selector:
    {{- include "fxtriage.selectorLabels" . | nindent 4 }}
  ports:
    - name: {{ .portName }}
      port: {{ $service.port }}
      targetPort: {{ .portName }}
      protocol: TCP
{{- end -}}

{{/* A ClusterIP Service for the metrics port of a service that has no other:
     (dict "root" $ "component" "inference" "port" 8082) */}}
{{- define "fxtriage.metricsService" -}}
{{- include "fxtriage.service" (dict "root" .root "component" .component "name" .component "portName" "metrics" "metrics" true "service" (dict "type" "ClusterIP" "port" .port "annotations" (dict) "loadBalancerSourceRanges" (list) "externalTrafficPolicy" "Cluster")) -}}
{{- end -}}

{{/* A container of the migration Job: (dict "root" $ "name" "migrate"
     "args" (list "migrate") "sites" false) */}}
{{- define "fxtriage.migrationContainer" -}}
{{- $root := .root -}}
- name: {{ .name }}
  image: {{ include "fxtriage.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  {{- with $root.Values.image.command }}
  command:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  args:
    {{- toYaml .args | nindent 4 }}
  env:
    {{- include "fxtriage.env.common" $root | nindent 4 }}
    {{- include "fxtriage.env.postgres" (dict "root" $root "application" "fxtriage-migrate" "secret" $root.Values.migration.ownerSecret) | trim | nindent 4 }}
    {{- if and (eq .name "migrate") $root.Values.migration.serviceRole }}
    - name: FXTRIAGE_SERVICE_ROLE
      value: {{ $root.Values.migration.serviceRole | quote }}
    {{- end }}
  resources:
    {{- toYaml $root.Values.migration.resources | nindent 4 }}
  securityContext:
    {{- include "fxtriage.containerSecurityContext" $root | nindent 4 }}
  volumeMounts:
    {{- include "fxtriage.tmpMount" $root | nindent 4 }}
    {{- if .sites }}
    - name: sites
      mountPath: /etc/fxtriage/sites
      readOnly: true
    {{- end }}
{{- end -}}

{{/* NetworkPolicy peers of a source or destination {cidrs, namespaceSelector,
     podSelector}, as JSON: one ipBlock per CIDR, one peer for the selectors;
     [] (any address) when all three are empty. */}}
{{- define "fxtriage.networkPolicy.peers" -}}
{{- $peers := list -}}
{{- range (get . "cidrs" | default (list)) -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" .)) -}}
{{- end -}}
{{- $selectors := dict -}}
{{- with get . "namespaceSelector" }}{{ $_ := set $selectors "namespaceSelector" . }}{{ end -}}
{{- with get . "podSelector" }}{{ $_ := set $selectors "podSelector" . }}{{ end -}}
{{- if $selectors }}{{ $peers = append $peers $selectors }}{{ end -}}
{{- toJson $peers -}}
{{- end -}}

{{/* A NetworkPolicy rule as JSON: (dict "key" "from" "peer" . "ports" (list (dict "port" "http" "protocol" "TCP"))).
     Without peers the rule has no "from"/"to": these ports from or to anywhere. */}}
{{- define "fxtriage.networkPolicy.rule" -}}
{{- $rule := dict "ports" .ports -}}
{{- $peers := include "fxtriage.networkPolicy.peers" .peer | fromJsonArray -}}
{{- if $peers }}{{ $_ := set $rule .key $peers }}{{ end -}}
{{- toJson $rule -}}
{{- end -}}
