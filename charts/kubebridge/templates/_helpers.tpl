{{/* The chart's name: nameOverride, else "kubebridge". */}}
{{- define "kubebridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Base name of every object: fullnameOverride, else the release name when it already
contains the chart's name, else <release>-<name>. 40 characters at most, so
"<base>-cluster-agent-leader-election" stays within 63. */}}
{{- define "kubebridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "kubebridge.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubebridge.labels" -}}
app.kubernetes.io/name: {{ include "kubebridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: kubebridge
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one agent: (dict "ctx" $ "component" "node-agent") */}}
{{- define "kubebridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubebridge.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: (dict "image" <image values> "global" .Values.global "tag" <default tag>).
[registry/]repository:tag[@digest]; global.imageRegistry wins over image.registry. */}}
{{- define "kubebridge.imageRef" -}}
{{- $registry := default .image.registry (.global | default dict).imageRegistry -}}
{{- $ref := printf "%s:%s" .image.repository (default .tag .image.tag) -}}
{{- if $registry }}{{ $ref = printf "%s/%s" $registry $ref }}{{ end -}}
{{- if .image.digest }}{{ $ref = printf "%s@%s" $ref .image.digest }}{{ end -}}
{{- $ref -}}
{{- end -}}

{{- define "kubebridge.image" -}}
{{- include "kubebridge.imageRef" (dict "image" .Values.image "global" .Values.global "tag" .Chart.AppVersion) -}}
{{- end -}}

{{/* The ServiceAccount of one agent: (dict "ctx" $ "component" "node-agent" "agent" .Values.nodeAgent) */}}
{{- define "kubebridge.serviceAccountName" -}}
{{- $default := printf "%s-%s" (include "kubebridge.fullname" .ctx) .component -}}
{{- .agent.serviceAccountName | default .ctx.Values.serviceAccount.name | default $default -}}
{{- end -}}

{{/* "fineGrained" or "nodesProxy": the kubelet permissions of the node agent (nodeAgent.kubeletAuthz). */}}
{{- define "kubebridge.kubeletAuthz" -}}
{{- $mode := .Values.nodeAgent.kubeletAuthz -}}
{{- if eq $mode "auto" -}}
{{- ternary "fineGrained" "nodesProxy" (semverCompare ">=1.33.0-0" .Capabilities.KubeVersion.Version) -}}
{{- else -}}
{{- $mode -}}
{{- end -}}
{{- end -}}

{{/* Serving scheme of /metrics as Prometheus sees it: "https" with webConfig or kubeRBACProxy. */}}
{{- define "kubebridge.scheme" -}}
{{- ternary "https" "http" (or (not (empty .Values.webConfig.secretName)) .Values.kubeRBACProxy.enabled) -}}
{{- end -}}

{{/* The port Prometheus scrapes. */}}
{{- define "kubebridge.metricsPort" -}}
{{- ternary .Values.kubeRBACProxy.port 9500 .Values.kubeRBACProxy.enabled -}}
{{- end -}}

{{- define "kubebridge.leaseName" -}}
{{- printf "%s-events" (include "kubebridge.fullname" .) -}}
{{- end -}}

{{/* The config file (exporter/config.py keys), shared by both agents. */}}
{{- define "kubebridge.config" -}}
{{- $c := dict "listen_address" "0.0.0.0:9500" "log_level" .Values.logLevel "log_format" .Values.logFormat "cluster" .Values.cluster "scrape_timeout" .Values.scrapeTimeout "pod_refresh_interval" .Values.podRefreshInterval "label_allowlist" .Values.labelAllowlist "label_denylist" .Values.labelDenylist "relabel_configs" .Values.relabelConfigs -}}
{{- $kubelet := dict "insecure_skip_verify" .Values.kubelet.insecureSkipVerify -}}
{{- if .Values.kubelet.serverName }}{{ $_ := set $kubelet "server_name" .Values.kubelet.serverName }}{{ end -}}
{{- $_ := set $c "kubelet" $kubelet -}}
{{- $collectors := dict -}}
{{- $_ := set $collectors "events" (dict "leader_election" .Values.clusterAgent.leaderElection "lease_name" (include "kubebridge.leaseName" .)) -}}
{{- $_ := set $collectors "kube_system" (dict "namespaces" .Values.clusterAgent.kubeSystemNamespaces) -}}
{{- if .Values.clusterAgent.etcd.members -}}
{{- $members := list -}}
{{- range .Values.clusterAgent.etcd.members -}}
{{- $m := deepCopy . -}}
{{- if $.Values.clusterAgent.etcd.certsSecret -}}
{{- $_ := set $m "ca_file" "/etc/kubebridge/etcd/ca.crt" -}}
{{- $_ := set $m "cert_file" "/etc/kubebridge/etcd/tls.crt" -}}
{{- $_ := set $m "key_file" "/etc/kubebridge/etcd/tls.key" -}}
{{- end -}}
{{- $members = append $members $m -}}
{{- end -}}
{{- $_ := set $collectors "etcd" (dict "members" $members) -}}
{{- $_ := set $collectors "etcd_v2" (dict "members" $members) -}}
{{- end -}}
{{- if .Values.nodeAgent.collectors.docker -}}
{{- $_ := set $collectors "docker" (dict "socket" (printf "unix://%s" .Values.nodeAgent.docker.socketPath)) -}}
{{- end -}}
{{- if and .Values.nodeAgent.collectors.statsd .Values.nodeAgent.statsd.socketDir -}}
{{- $_ := set $collectors "statsd" (dict "unix_socket" "/var/run/kubebridge-statsd/dsd.socket") -}}
{{- end -}}
{{- $collectors = mergeOverwrite $collectors (deepCopy .Values.collectorConfig) -}}
{{- $_ := set $c "collectors" $collectors -}}
{{- toYaml $c -}}
{{- end -}}

{{/* `run`, the collector flags and the web flags of one agent:
(dict "ctx" $ "on" <its collectors> "off" <the other's>) */}}
{{- define "kubebridge.args" -}}
- run
- --config=/etc/kubebridge/config.yaml
{{- range $name, $enabled := .on }}
- --{{ if not $enabled }}no-{{ end }}collector.{{ $name }}
{{- end }}
{{- range $name, $_ := .off }}
{{- if not (hasKey $.on $name) }}
- --no-collector.{{ $name }}
{{- end }}
{{- end }}
{{- if .ctx.Values.kubeRBACProxy.enabled }}
- --web.listen-address=127.0.0.1:9500
{{- end }}
{{- if .ctx.Values.webConfig.secretName }}
- --web.config.file=/etc/kubebridge-web/{{ .ctx.Values.webConfig.fileName }}
{{- end }}
{{- with .ctx.Values.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The container env of one agent: (dict "ctx" $ "node" true|false) */}}
{{- define "kubebridge.env" -}}
{{- if .node }}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: NODE_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- $env := .ctx.Values.env }}
{{- if kindIs "map" $env }}
{{- range $name, $value := $env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- else if $env }}
{{ toYaml $env }}
{{- end }}
{{- end -}}

{{/* kubebridge's probes: through kube-rbac-proxy's port when it is on (it lets /healthz and
/readyz through without a token), HTTPS when a web config is mounted. */}}
{{- define "kubebridge.probes" -}}
{{- $port := ternary "https-metrics" "metrics" .Values.kubeRBACProxy.enabled -}}
{{- $scheme := include "kubebridge.scheme" . | upper -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ $port }}
    {{- if eq $scheme "HTTPS" }}
    scheme: HTTPS
    {{- end }}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ $port }}
    {{- if eq $scheme "HTTPS" }}
    scheme: HTTPS
    {{- end }}
  periodSeconds: 10
  timeoutSeconds: 5
{{- end -}}

{{- define "kubebridge.scrapeAnnotations" -}}
{{- if and .Values.scrapeAnnotations (not .Values.serviceMonitor.enabled) -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ include "kubebridge.metricsPort" . | quote }}
prometheus.io/path: /metrics
{{- if eq (include "kubebridge.scheme" .) "https" }}
prometheus.io/scheme: https
{{- end }}
{{- end -}}
{{- end -}}

{{/* The kube-rbac-proxy sidecar (both agents). */}}
{{- define "kubebridge.rbacProxyContainer" -}}
{{- $p := .Values.kubeRBACProxy -}}
- name: kube-rbac-proxy
  image: {{ include "kubebridge.imageRef" (dict "image" $p.image "global" .Values.global "tag" $p.image.tag) }}
  imagePullPolicy: {{ $p.image.pullPolicy }}
  args:
    - --secure-listen-address=:{{ $p.port }}
    - --upstream=http://127.0.0.1:9500/
    - --proxy-endpoints-port={{ $p.proxyEndpointsPort }}
    # Kubelet probes carry no token.
    - --ignore-paths=/healthz,/readyz
    {{- with $p.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: https-metrics
      containerPort: {{ $p.port }}
      protocol: TCP
    - name: proxy-healthz
      containerPort: {{ $p.proxyEndpointsPort }}
      protocol: TCP
  readinessProbe:
    httpGet:
      path: /healthz
      port: proxy-healthz
      scheme: HTTPS
    periodSeconds: 10
    timeoutSeconds: 5
  resources:
    {{- toYaml $p.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
{{- end -}}

{{/* The pod spec of one agent:
(dict "ctx" $ "component" "node-agent" "agent" .Values.nodeAgent "on" <its collectors> "off" <the other's>) */}}
{{- define "kubebridge.podSpec" -}}
{{- $ := .ctx -}}
{{- $node := eq .component "node-agent" -}}
{{- $docker := and $node (index .on "docker" | default false) -}}
{{- $statsd := and $node (index .on "statsd" | default false) -}}
{{- $statsdSocket := and $statsd .agent.statsd.socketDir -}}
serviceAccountName: {{ include "kubebridge.serviceAccountName" . }}
{{- with concat ($.Values.global.imagePullSecrets | default list) $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .agent.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if and $node $.Values.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- with .agent.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .agent.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .agent.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $psc := deepCopy $.Values.podSecurityContext }}
{{- if and $docker (not (kindIs "invalid" .agent.docker.socketGroup)) }}
{{- $_ := set $psc "supplementalGroups" (append ($psc.supplementalGroups | default list) (int .agent.docker.socketGroup)) }}
{{- end }}
{{- with $psc }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
terminationGracePeriodSeconds: 30
containers:
  - name: kubebridge
    image: {{ include "kubebridge.image" $ }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    args:
      {{- include "kubebridge.args" (dict "ctx" $ "on" .on "off" .off) | nindent 6 }}
    env:
      {{- include "kubebridge.env" (dict "ctx" $ "node" $node) | trim | nindent 6 }}
    {{- if or (not $.Values.kubeRBACProxy.enabled) $statsd }}
    ports:
      {{- if not $.Values.kubeRBACProxy.enabled }}
      - name: metrics
        containerPort: 9500
        protocol: TCP
      {{- end }}
      {{- if $statsd }}
      - name: statsd
        containerPort: 8125
        hostPort: {{ .agent.statsd.hostPort }}
        protocol: UDP
      {{- end }}
    {{- end }}
    {{- include "kubebridge.probes" $ | nindent 4 }}
    resources:
      {{- toYaml .agent.resources | nindent 6 }}
    {{- with $.Values.securityContext }}
    securityContext:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    volumeMounts:
      - name: config
        mountPath: /etc/kubebridge
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- if $.Values.webConfig.secretName }}
      - name: web-config
        mountPath: /etc/kubebridge-web
        readOnly: true
      {{- end }}
      {{- if $docker }}
      - name: docker-socket
        mountPath: {{ .agent.docker.socketPath }}
        readOnly: true
      {{- end }}
      {{- if $statsdSocket }}
      - name: statsd-socket
        mountPath: /var/run/kubebridge-statsd
      {{- end }}
      {{- if and (not $node) $.Values.clusterAgent.etcd.certsSecret }}
      - name: etcd-certs
        mountPath: /etc/kubebridge/etcd
        readOnly: true
      {{- end }}
      {{- with $.Values.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
  {{- if $.Values.kubeRBACProxy.enabled }}
  {{- include "kubebridge.rbacProxyContainer" $ | nindent 2 }}
  {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "kubebridge.fullname" $ }}-config
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
  {{- if $.Values.webConfig.secretName }}
  - name: web-config
    secret:
      secretName: {{ $.Values.webConfig.secretName }}
      defaultMode: 0440
  {{- end }}
  {{- if $docker }}
  - name: docker-socket
    hostPath:
      path: {{ .agent.docker.socketPath }}
      type: Socket
  {{- end }}
  {{- if $statsdSocket }}
  - name: statsd-socket
    hostPath:
      path: {{ .agent.statsd.socketDir }}
      type: DirectoryOrCreate
  {{- end }}
  {{- if and (not $node) $.Values.clusterAgent.etcd.certsSecret }}
  - name: etcd-certs
    secret:
      secretName: {{ $.Values.clusterAgent.etcd.certsSecret }}
      defaultMode: 0440
  {{- end }}
  {{- with $.Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Pod template metadata of one agent: (dict "ctx" $ "component" ... "agent" ...) */}}
{{- define "kubebridge.podMetadata" -}}
{{- $ := .ctx -}}
labels:
  {{- include "kubebridge.labels" $ | nindent 2 }}
  app.kubernetes.io/component: {{ .component }}
  {{- with .agent.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include "kubebridge.config" $ | sha256sum }}
  {{- with include "kubebridge.scrapeAnnotations" $ }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with .agent.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Combinations the schema cannot express; fails the render with the reason. */}}
{{- define "kubebridge.validate" -}}
{{- if and (gt (int .Values.clusterAgent.replicas) 1) (not .Values.clusterAgent.leaderElection) }}
{{- fail "clusterAgent.replicas > 1 needs clusterAgent.leaderElection: true (every replica would count every event)" }}
{{- end }}
{{- if and .Values.webConfig.secretName .Values.kubeRBACProxy.enabled }}
{{- fail "webConfig and kubeRBACProxy are alternatives: kube-rbac-proxy terminates TLS and talks plain HTTP to kubebridge on 127.0.0.1" }}
{{- end }}
{{- end -}}

{{/* What kube-rbac-proxy needs to check a scraper's token and its permission on /metrics. */}}
{{- define "kubebridge.rbacProxyRules" -}}
# kube-rbac-proxy: authenticate the scraper's token, then ask whether it may get /metrics.
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
{{- end -}}
