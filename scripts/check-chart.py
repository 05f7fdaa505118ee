"""The checks of scripts/check-chart that read files: the values schema, the
facts of the chart's renders, and the alerts and dashboards. Needs PyYAML and
jsonschema (both come with kubernetes-validate).

  check-chart.py schema VALUES_SCHEMA_JSON
      draft 7, and additionalProperties false on every object it defines
  check-chart.py split OUT_DIR RENDER...
      writes each render's objects to OUT_DIR/NAME.core, its CRD objects
      (ServiceMonitors, PrometheusRules: unknown to kubernetes-validate) to
      OUT_DIR/NAME.crd
  check-chart.py facts RENDER_DIR CHART_DIR
      RENDER_DIR holds one `helm template` output per values file, named after
      it (minimal-values.yaml, ...); prints one line per fact, "ok FACT
      (detail)" or "FACT: what is wrong"
  check-chart.py monitoring CHART_DIR README_MD OUT_RULES
      the alerts (CHART_DIR/monitoring/alerts.yaml: labels, annotations,
      runbooks), their tests (a firing and a silent case for each), the
      dashboards (CHART_DIR/monitoring/dashboards/*.json), and every metric
      name they use against the Metrics table of README_MD; writes the
      dashboards' queries as recording rules to OUT_RULES for `promtool check
      rules`. Prints one line per check, like facts.

Exits 1 when a check fails.
"""

import glob
import json
import os
import re
import sys

import jsonschema
import yaml

# The variables each subcommand reads (`fxtriage <command> --help`), and those
# the chart must set for it to start inside a pod.
READS = {
    "ingest": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_DIMSE_ADDR", "FXTRIAGE_DIMSE_INSTANCE_MEMORY_MB",
               "FXTRIAGE_DIMSE_MAX_ASSOCIATIONS", "FXTRIAGE_DIMSE_MEMORY_BUDGET_MB", "FXTRIAGE_INGEST_HTTP_ADDR",
               "FXTRIAGE_DIMSE_TLS_ADDR", "FXTRIAGE_DIMSE_TLS_CERTIFICATE", "FXTRIAGE_DIMSE_TLS_KEY",
               "FXTRIAGE_DIMSE_TLS_CLIENT_CA", "FXTRIAGE_HTTPS_CERTIFICATE", "FXTRIAGE_HTTPS_KEY", "FXTRIAGE_AUTH_FAILURES_PER_MINUTE",
               "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_KAFKA_PROPERTIES", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT",
               "FXTRIAGE_NAMESPACE", "FXTRIAGE_OTLP_ENDPOINT", "FXTRIAGE_S3_ACCESS_KEY_ID", "FXTRIAGE_S3_BUCKET",
               "FXTRIAGE_S3_ENDPOINT", "FXTRIAGE_S3_REGION", "FXTRIAGE_S3_SECRET_ACCESS_KEY", "FXTRIAGE_SITES",
               "FXTRIAGE_STORE_DIR", "FXTRIAGE_TOPIC_PARTITIONS", "FXTRIAGE_TOPIC_REPLICATION"},
    "inference": {"FXTRIAGE_EXECUTION_PROVIDER", "FXTRIAGE_HEALTH_ADDR", "FXTRIAGE_INTRA_THREADS",
                  "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_KAFKA_PROPERTIES", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT",
                  "FXTRIAGE_MAX_BATCH", "FXTRIAGE_MAX_IN_FLIGHT", "FXTRIAGE_MAX_WAIT_MS", "FXTRIAGE_MODEL_DIR",
                  "FXTRIAGE_MODEL_SESSIONS", "FXTRIAGE_NAMESPACE", "FXTRIAGE_ORT_SPINNING", "FXTRIAGE_OTLP_ENDPOINT",
                  "FXTRIAGE_S3_ACCESS_KEY_ID", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_S3_ENDPOINT", "FXTRIAGE_S3_REGION",
                  "FXTRIAGE_S3_SECRET_ACCESS_KEY", "FXTRIAGE_STORE_DIR", "FXTRIAGE_TOPIC_PARTITIONS",
                  "FXTRIAGE_TOPIC_REPLICATION", "ORT_DYLIB_PATH"},
    "prioritizer": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_HEALTH_ADDR", "FXTRIAGE_KAFKA_BROKERS",
                    "FXTRIAGE_KAFKA_PROPERTIES", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_NAMESPACE",
                    "FXTRIAGE_OTLP_ENDPOINT", "FXTRIAGE_SITES", "FXTRIAGE_TOPIC_PARTITIONS",
                    "FXTRIAGE_TOPIC_REPLICATION"},
    "api": {"FXTRIAGE_API_HTTP_ADDR", "FXTRIAGE_CLAIM_MINUTES", "FXTRIAGE_DATABASE_URL", "FXTRIAGE_KAFKA_BROKERS",
            "FXTRIAGE_HTTPS_CERTIFICATE", "FXTRIAGE_HTTPS_KEY", "FXTRIAGE_AUTH_FAILURES_PER_MINUTE", "FXTRIAGE_OIDC_ISSUER", "FXTRIAGE_OIDC_AUDIENCE",
            "FXTRIAGE_OIDC_JWKS_URL", "FXTRIAGE_OIDC_CLOCK_SKEW_SECONDS",
            "FXTRIAGE_KAFKA_PROPERTIES", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_NAMESPACE",
            "FXTRIAGE_OTLP_ENDPOINT", "FXTRIAGE_S3_ACCESS_KEY_ID", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_S3_ENDPOINT",
            "FXTRIAGE_S3_REGION", "FXTRIAGE_S3_SECRET_ACCESS_KEY", "FXTRIAGE_STORE_DIR",
            "FXTRIAGE_TOPIC_PARTITIONS", "FXTRIAGE_TOPIC_REPLICATION"},
    "dispatch serve": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_HEALTH_ADDR", "FXTRIAGE_HL7_ADDR", "FXTRIAGE_LOG",
                       "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_OTLP_ENDPOINT", "FXTRIAGE_S3_ACCESS_KEY_ID",
                       "FXTRIAGE_S3_BUCKET", "FXTRIAGE_S3_ENDPOINT", "FXTRIAGE_S3_REGION",
                       "FXTRIAGE_S3_SECRET_ACCESS_KEY", "FXTRIAGE_SITES", "FXTRIAGE_STORE_DIR"},
    "migrate": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_OTLP_ENDPOINT",
                "FXTRIAGE_SERVICE_ROLE"},
    "sites apply": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_LOG", "FXTRIAGE_LOG_FORMAT", "FXTRIAGE_OTLP_ENDPOINT"},
}
NEEDS = {
    "ingest": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_DIMSE_ADDR",
               "FXTRIAGE_INGEST_HTTP_ADDR"},
    "inference": {"FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_HEALTH_ADDR"},
    "prioritizer": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_HEALTH_ADDR"},
    "api": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_KAFKA_BROKERS", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_API_HTTP_ADDR"},
    "dispatch serve": {"FXTRIAGE_DATABASE_URL", "FXTRIAGE_S3_BUCKET", "FXTRIAGE_HEALTH_ADDR"},
    "migrate": {"FXTRIAGE_DATABASE_URL"},
    "sites apply": {"FXTRIAGE_DATABASE_URL"},
}
LISTEN_VARIABLES = {"FXTRIAGE_DIMSE_ADDR", "FXTRIAGE_INGEST_HTTP_ADDR", "FXTRIAGE_API_HTTP_ADDR",
                    "FXTRIAGE_HEALTH_ADDR", "FXTRIAGE_HL7_ADDR"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.I)
COMMON_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                 "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of")
NO_ROOT = "no container runs as root: runAsNonRoot, a non-zero UID, read-only root, ALL capabilities dropped, RuntimeDefault seccomp"
# Custom resources: kubernetes-validate has no schema for them.
CRD_GROUPS = ("monitoring.coreos.com/",)
COMPONENTS = ("ingest", "inference", "prioritizer", "api", "dispatch")

# The alerts and dashboards, relative to the chart.
ALERTS = "monitoring/alerts.yaml"
ALERT_TESTS = "monitoring/alerts_test.yaml"
DASHBOARDS = "monitoring/dashboards"
DASHBOARD_FILES = ("inference.json", "pipeline-overview.json", "site-worklists.json")
# The recording rule templates/prometheusrule.yaml rebuilds from
# monitoring.prometheusRule.workingHours, and how.
WORKING_HOURS_RULE = "fxtriage:working_hours"
WORKING_HOURS_EXPR = ("vector(1) and on () (hour() >= {startHour} < {endHour})"
                      " and on () (day_of_week() >= {firstDay} <= {lastDay})")
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"

# What the chart's ServiceMonitors may hold: a strict subset of the Prometheus
# Operator's CRD (monitoring.coreos.com/v1), whose full schema is not
# obtainable here.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "additionalProperties": False, "required": ["name", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string", "minLength": 1},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "selector": {
                    "type": "object", "additionalProperties": False, "required": ["matchLabels"],
                    "properties": {"matchLabels": {"type": "object", "minProperties": 1,
                                                   "additionalProperties": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "additionalProperties": False, "required": ["port"],
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        },
                    },
                },
            },
        },
    },
}


# What the chart's PrometheusRule may hold: a strict subset of the Prometheus
# Operator's CRD (monitoring.coreos.com/v1).
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": SERVICE_MONITOR_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "rules": {
                                "type": "array", "minItems": 1,
                                "items": {
                                    "type": "object", "additionalProperties": False, "required": ["expr"],
                                    "properties": {
                                        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                                        "alert": {"type": "string", "minLength": 1},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": DURATION},
                                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                    },
                                    # A recording rule or an alert, and only an
                                    # alert waits (for) and has annotations.
                                    "oneOf": [
                                        {"required": ["record"],
                                         "not": {"anyOf": [{"required": ["alert"]}, {"required": ["for"]},
                                                           {"required": ["annotations"]}]}},
                                        {"required": ["alert"], "not": {"required": ["record"]}},
                                    ],
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


class Facts:
    def __init__(self):
        self.containers = 0
        self.problems = {}
        self.order = []
        self.details = {}

    def check(self, fact, condition, problem):
        if fact not in self.problems:
            self.problems[fact] = []
            self.order.append(fact)
        if not condition:
            self.problems[fact].append(problem)
        return condition

    def detail(self, fact, text):
        self.details[fact] = text

    def report(self):
        failed = False
        for fact in self.order:
            problems = self.problems[fact]
            if problems:
                failed = True
                shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                print(f"{fact}: {shown}")
            else:
                detail = self.details.get(fact)
                print(f"ok {fact}" + (f" ({detail})" if detail else ""))
        return 1 if failed else 0


def load(path):
    return [doc for doc in yaml.safe_load_all(open(path)) if doc]


def ident(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_specs(docs):
    """(object, pod spec, pod labels) of every Deployment and Job."""
    for obj in docs:
        if obj["kind"] in ("Deployment", "Job"):
            template = obj["spec"]["template"]
            yield obj, template["spec"], template["metadata"].get("labels", {})


def containers(spec):
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def command_of(container):
    args = container.get("args", [])
    if args[:2] in (["dispatch", "serve"], ["sites", "apply"]):
        return " ".join(args[:2])
    return args[0] if args else ""


def selects(selector, labels):
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def env_of(container):
    return {item["name"]: item for item in container.get("env", [])}


def check_render(facts, name, docs):
    workloads = list(pod_specs(docs))
    deployments = {obj["metadata"]["name"]: (obj, spec, labels) for obj, spec, labels in workloads
                   if obj["kind"] == "Deployment"}
    services = [obj for obj in docs if obj["kind"] == "Service"]

    # Labels.
    fact = "every object carries the app.kubernetes.io/* labels, and a component where it belongs"
    for obj in docs:
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in COMMON_LABELS if label not in labels]
        if obj["kind"] != "ServiceAccount" and "app.kubernetes.io/component" not in labels:
            missing.append("app.kubernetes.io/component")
        facts.check(fact, not missing, f"{name} {ident(obj)} lacks {', '.join(missing)}")

    # Security contexts.
    fact = NO_ROOT
    count = 0
    for obj, spec, _ in workloads:
        pod = spec.get("securityContext", {})
        facts.check(fact, pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) > 0
                    and pod.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                    f"{name} {ident(obj)}: pod securityContext {pod}")
        for container in containers(spec):
            count += 1
            context = container.get("securityContext", {})
            capabilities = context.get("capabilities", {})
            facts.check(fact, context.get("runAsNonRoot") is True and context.get("runAsUser", pod.get("runAsUser", 0)) > 0
                        and context.get("allowPrivilegeEscalation") is False
                        and context.get("privileged", False) is False
                        and context.get("readOnlyRootFilesystem") is True
                        and capabilities.get("drop") == ["ALL"] and not capabilities.get("add")
                        and context.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                        f"{name} {ident(obj)} container {container['name']}: {context}")
    facts.containers += count

    fact = "every container writes only to /tmp, an emptyDir, and TMPDIR points there"
    for obj, spec, _ in workloads:
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for container in containers(spec):
            mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
            tmp = volumes.get(mounts.get("/tmp"), {})
            facts.check(fact, "emptyDir" in tmp and env_of(container).get("TMPDIR", {}).get("value") == "/tmp",
                        f"{name} {ident(obj)} container {container['name']}")

    # Commands and their variables.
    fact = "each container runs a real subcommand with variables it reads, and those it needs"
    for obj, spec, _ in workloads:
        for container in containers(spec):
            command = command_of(container)
            if not facts.check(fact, command in READS, f"{name} {ident(obj)}: unknown command {container.get('args')}"):
                continue
            env = env_of(container)
            unknown = sorted(var for var in env if var.startswith(("FXTRIAGE_", "ORT_")) and var not in READS[command])
            missing = sorted(NEEDS[command] - set(env))
            facts.check(fact, not unknown and not missing,
                        f"{name} {ident(obj)} ({command}): not read {unknown}, missing {missing}")

    fact = "every listener binds all addresses (0.0.0.0 or [::]) on a declared container port"
    for obj, spec, _ in workloads:
        for container in containers(spec):
            ports = {port["containerPort"] for port in container.get("ports", [])}
            for var, item in env_of(container).items():
                if var not in LISTEN_VARIABLES:
                    continue
                value = item.get("value", "")
                host, _, port = value.rpartition(":")
                facts.check(fact, host in ("0.0.0.0", "[::]") and port.isdigit() and int(port) in ports,
                            f"{name} {ident(obj)} {var}={value!r}, container ports {sorted(ports)}")

    fact = "credentials only through secretKeyRef; no Secret object and no credential value in a render"
    facts.check(fact, not any(obj["kind"] == "Secret" for obj in docs), f"{name}: renders a Secret")
    for obj, spec, _ in workloads:
        for container in containers(spec):
            env = env_of(container)
            defined = []
            for item in container.get("env", []):
                var, value = item["name"], item.get("value")
                if SECRET_NAME.search(var):
                    facts.check(fact, "secretKeyRef" in item.get("valueFrom", {}),
                                f"{name} {ident(obj)} {var} is not from a Secret")
                if value is not None:
                    # Kubernetes expands $(VAR) only for variables defined above.
                    for reference in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                        facts.check(fact, reference in defined and "secretKeyRef" in env[reference].get("valueFrom", {}),
                                    f"{name} {ident(obj)} {var} refers to $({reference}), not a Secret variable above it")
                defined.append(var)
            url = env.get("FXTRIAGE_DATABASE_URL", {})
            if "value" in url:
                password = re.search(r"password=('[^']*'|\S+)", url["value"])
                facts.check(fact, password and password.group(1) == "'$(SECRET_POSTGRES_PASSWORD)'",
                            f"{name} {ident(obj)} FXTRIAGE_DATABASE_URL carries a password")
            properties = env.get("FXTRIAGE_KAFKA_PROPERTIES", {}).get("value", "")
            for item in filter(None, properties.split(",")):
                key, _, value = item.partition("=")
                if re.search(r"password|secret|jaas", key):
                    facts.check(fact, re.fullmatch(r"\$\(SECRET_[A-Z_]+\)", value),
                                f"{name} {ident(obj)} Kafka property {key} is written in the render")

    # Probes.
    fact = "every service has startup, liveness and readiness probes on /health/live and /health/ready of a declared port"
    for obj, spec, _ in workloads:
        if obj["kind"] != "Deployment":
            continue
        for container in spec["containers"]:
            names = {port["name"] for port in container.get("ports", [])}
            for probe, path in (("startupProbe", "/health/live"), ("livenessProbe", "/health/live"),
                                ("readinessProbe", "/health/ready")):
                http = container.get(probe, {}).get("httpGet", {})
                facts.check(fact, http.get("path") == path and http.get("port") in names,
                            f"{name} {ident(obj)} {probe} {http}")

    # Services, budgets, autoscaler, ingress.
    fact = "every Service selects one Deployment and targets a named port of it"
    for service in services:
        selector = service["spec"]["selector"]
        matched = [deployment for deployment, (_, _, labels) in deployments.items() if selects(selector, labels)]
        if not facts.check(fact, len(matched) == 1, f"{name} {ident(service)} selects {matched}"):
            continue
        _, spec, _ = deployments[matched[0]]
        names = {port["name"] for container in spec["containers"] for port in container.get("ports", [])}
        for port in service["spec"]["ports"]:
            facts.check(fact, port["targetPort"] in names, f"{name} {ident(service)} targets {port['targetPort']}")

    fact = "every PodDisruptionBudget covers a Deployment of two replicas or more"
    autoscaled = {obj["spec"]["scaleTargetRef"]["name"]: obj for obj in docs if obj["kind"] == "HorizontalPodAutoscaler"}
    for budget in (obj for obj in docs if obj["kind"] == "PodDisruptionBudget"):
        matched = [deployment for deployment, (_, _, labels) in deployments.items()
                   if selects(budget["spec"]["selector"]["matchLabels"], labels)]
        if not facts.check(fact, len(matched) == 1, f"{name} {ident(budget)} selects {matched}"):
            continue
        deployment = deployments[matched[0]][0]
        replicas = (autoscaled[matched[0]]["spec"]["minReplicas"] if matched[0] in autoscaled
                    else deployment["spec"].get("replicas", 1))
        facts.check(fact, replicas >= 2, f"{name} {ident(budget)}: {replicas} replica(s)")

    fact = "the HorizontalPodAutoscaler targets inference, whose Deployment then sets no replicas"
    for target, hpa in autoscaled.items():
        facts.check(fact, target in deployments and target.endswith("-inference")
                    and "replicas" not in deployments[target][0]["spec"],
                    f"{name} {ident(hpa)} targets {target}")

    fact = "every Ingress has a class and TLS for its hosts, and routes to a Service port that exists"
    ports_of = {service["metadata"]["name"]: {port["port"] for port in service["spec"]["ports"]} for service in services}
    for ingress in (obj for obj in docs if obj["kind"] == "Ingress"):
        spec = ingress["spec"]
        hosts = {rule["host"] for rule in spec["rules"]}
        tls_hosts = {host for tls in spec.get("tls", []) for host in tls["hosts"]}
        facts.check(fact, spec.get("ingressClassName") and hosts and hosts <= tls_hosts,
                    f"{name} {ident(ingress)}: class {spec.get('ingressClassName')}, hosts {hosts}, TLS {tls_hosts}")
        for rule in spec["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                facts.check(fact, backend["port"]["number"] in ports_of.get(backend["name"], set()),
                            f"{name} {ident(ingress)} routes to {backend}")

    fact = "the migration Job is a pre-install,pre-upgrade hook deleted when it succeeds, running migrate first"
    jobs = [obj for obj in docs if obj["kind"] == "Job"]
    facts.check(fact, len(jobs) == 1, f"{name}: {len(jobs)} Jobs")
    for job in jobs:
        annotations = job["metadata"].get("annotations", {})
        spec = job["spec"]["template"]["spec"]
        facts.check(fact, annotations.get("helm.sh/hook") == "pre-install,pre-upgrade"
                    and "hook-succeeded" in annotations.get("helm.sh/hook-delete-policy", "")
                    and "before-hook-creation" in annotations.get("helm.sh/hook-delete-policy", "")
                    and spec.get("restartPolicy") == "Never"
                    and command_of(containers(spec)[0]) == "migrate",
                    f"{name} {ident(job)}: {annotations}")

    # Network policies.
    policies = [obj for obj in docs if obj["kind"] == "NetworkPolicy"]
    if policies:
        fact = "network policies: every pod is covered; ingest admits only DICOM and HTTP, api only HTTP, the rest only metrics (and HL7); every egress rule names ports"
        allowed = {"ingest": {"dicom", "http"}, "api": {"http"}, "inference": {"metrics"},
                   "prioritizer": {"metrics"}, "dispatch": {"metrics", "hl7"}, "migrate": set()}
        for obj, spec, labels in workloads:
            covering = [policy for policy in policies if selects(policy["spec"]["podSelector"]["matchLabels"], labels)]
            if not facts.check(fact, len(covering) == 1, f"{name} {ident(obj)} is covered by {len(covering)} policies"):
                continue
            policy = covering[0]
            component = labels["app.kubernetes.io/component"]
            declared = {port["name"] for container in spec["containers"] for port in container.get("ports", [])}
            admitted = {port["port"] for rule in policy["spec"].get("ingress", []) for port in rule.get("ports", [])}
            rules_without_ports = [rule for rule in policy["spec"].get("ingress", []) if not rule.get("ports")]
            facts.check(fact, admitted <= allowed[component] and admitted <= declared and not rules_without_ports,
                        f"{name} {ident(policy)} admits {sorted(admitted)}")
            facts.check(fact, set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
                        and all(rule.get("ports") for rule in policy["spec"].get("egress", [])),
                        f"{name} {ident(policy)}: an egress rule without ports, or a policy type missing")

    # ServiceMonitors: the CRD's shape, and a Service port behind each endpoint.
    monitors = [obj for obj in docs if obj["kind"] == "ServiceMonitor"]
    if monitors:
        fact = "ServiceMonitors (a CRD kubernetes-validate does not know): valid against a strict subset of monitoring.coreos.com/v1, each endpoint a named port of a selected Service"
        validator = jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA)
        for monitor in monitors:
            errors = sorted(validator.iter_errors(monitor), key=lambda error: list(error.path))
            facts.check(fact, not errors, f"{name} {ident(monitor)}: " + "; ".join(
                f"{'.'.join(map(str, error.path))}: {error.message}" for error in errors[:3]))
            selected = [service for service in services
                        if selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"].get("labels", {}))]
            for endpoint in monitor["spec"]["endpoints"]:
                facts.check(fact, len(selected) == 1 and endpoint["port"] in {port["name"] for port in selected[0]["spec"]["ports"]},
                            f"{name} {ident(monitor)} endpoint {endpoint['port']} on {[ident(s) for s in selected]}")
        facts.check(fact, {monitor["metadata"]["labels"]["app.kubernetes.io/component"] for monitor in monitors} == set(COMPONENTS),
                    f"{name}: ServiceMonitors for {sorted(m['metadata']['name'] for m in monitors)}")


def values_of(chart_dir, name):
    """The chart's default values with those of ci/NAME.yaml or examples/NAME.yaml over them (maps merged)."""
    def merge(base, over):
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    values = yaml.safe_load(open(os.path.join(chart_dir, "values.yaml")))
    for folder in ("ci", "examples"):
        path = os.path.join(chart_dir, folder, name + ".yaml")
        if os.path.exists(path):
            return merge(values, yaml.safe_load(open(path)) or {})
    raise AssertionError(f"no values file for the render {name}")


def alert_jobs(groups):
    """The job names the alerts on `up` use."""
    jobs = set()
    for group in groups:
        for rule in group["rules"]:
            for expr in re.findall(r'\bup\{([^}]*)\}', rule["expr"]):
                for operator, value in re.findall(r'job\s*(=~|=)\s*"([^"]*)"', expr):
                    jobs.update(value.split("|") if operator == "=~" else [value])
    return jobs


def check_monitoring_objects(facts, chart_dir, renders):
    alerts = yaml.safe_load(open(os.path.join(chart_dir, ALERTS)))
    fact = (f"PrometheusRule (a CRD kubernetes-validate does not know): valid against a strict subset of "
            f"monitoring.coreos.com/v1; its groups are {ALERTS}'s, {WORKING_HOURS_RULE} built from the values; "
            f"its alerts on up name the ServiceMonitors' jobs")
    validator = jsonschema.Draft7Validator(PROMETHEUS_RULE_SCHEMA)
    defaults = values_of(chart_dir, "minimal-values")["monitoring"]["prometheusRule"]["workingHours"]
    in_file = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]
               if rule.get("record") == WORKING_HOURS_RULE]
    facts.check(fact, in_file == [WORKING_HOURS_EXPR.format(**defaults)],
                f"{ALERTS}: {WORKING_HOURS_RULE} is {in_file}, the chart's defaults build "
                f"{WORKING_HOURS_EXPR.format(**defaults)!r}")
    details = []
    for name, docs in renders.items():
        rules = [obj for obj in docs if obj["kind"] == "PrometheusRule"]
        enabled = values_of(chart_dir, name)["monitoring"]["prometheusRule"]["enabled"]
        if not facts.check(fact, len(rules) == (1 if enabled else 0),
                           f"{name}: {len(rules)} PrometheusRules, monitoring.prometheusRule.enabled {enabled}"):
            continue
        for rule in rules:
            errors = sorted(validator.iter_errors(rule), key=lambda error: list(error.path))
            facts.check(fact, not errors, f"{name} {ident(rule)}: " + "; ".join(
                f"{'.'.join(map(str, error.path))}: {error.message}" for error in errors[:3]))
            hours = values_of(chart_dir, name)["monitoring"]["prometheusRule"]["workingHours"]
            expected = yaml.safe_load(open(os.path.join(chart_dir, ALERTS)))["groups"]
            for group in expected:
                for item in group["rules"]:
                    if item.get("record") == WORKING_HOURS_RULE:
                        item["expr"] = WORKING_HOURS_EXPR.format(**hours)
            rendered = rule.get("spec", {}).get("groups")
            if rendered != expected:
                def rules_of(groups):
                    return {(group.get("name"), item.get("alert") or item.get("record")): item
                            for group in groups or [] for item in group.get("rules", [])}
                got, want = rules_of(rendered), rules_of(expected)
                different = sorted(f"{group}/{item}" for group, item in set(got) | set(want)
                                   if got.get((group, item)) != want.get((group, item)))
                facts.check(fact, False, f"{name} {ident(rule)}: spec.groups differ from {ALERTS} "
                            f"in {', '.join(different) or 'the groups themselves'}")
            else:
                same = hours == defaults
                details.append(f"{name}: " + ("the file's own" if same else
                               f"{hours['startHour']:02d}-{hours['endHour']:02d} UTC, days {hours['firstDay']}-{hours['lastDay']}"))
        monitors = [obj for obj in docs if obj["kind"] == "ServiceMonitor"]
        services = [obj for obj in docs if obj["kind"] == "Service"]
        if rules and monitors:
            jobs = set()
            for monitor in monitors:
                label = monitor["spec"].get("jobLabel")
                for service in services:
                    if selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"].get("labels", {})):
                        jobs.add(service["metadata"]["labels"].get(label, service["metadata"]["name"]))
            used = alert_jobs(rules[0]["spec"]["groups"])
            facts.check(fact, used == jobs, f"{name}: the alerts on up name jobs {sorted(used)}, "
                        f"the ServiceMonitors make {sorted(jobs)}")
    facts.detail(fact, "; ".join(details))

    fact = f"dashboards ConfigMap: exactly the files of {DASHBOARDS}/, unchanged, labelled for Grafana's sidecar"
    files = {name: open(os.path.join(chart_dir, DASHBOARDS, name)).read()
             for name in sorted(os.listdir(os.path.join(chart_dir, DASHBOARDS))) if name.endswith(".json")}
    for name, docs in renders.items():
        config = values_of(chart_dir, name)["monitoring"]["dashboards"]
        maps = [obj for obj in docs if obj["kind"] == "ConfigMap"
                and obj["metadata"]["labels"].get("app.kubernetes.io/component") == "monitoring"]
        if not facts.check(fact, len(maps) == (1 if config["enabled"] else 0),
                           f"{name}: {len(maps)} dashboard ConfigMaps, monitoring.dashboards.enabled {config['enabled']}"):
            continue
        for config_map in maps:
            data = config_map.get("data", {})
            facts.check(fact, data == files, f"{name} {ident(config_map)} holds {sorted(data)}, "
                        f"not {sorted(files)} as they are")
            labels = config_map["metadata"]["labels"]
            facts.check(fact, all(labels.get(key) == value for key, value in config["labels"].items()),
                        f"{name} {ident(config_map)}: labels {labels}, values ask for {config['labels']}")
            size = sum(len(text.encode()) for text in data.values())
            facts.check(fact, size < 512 * 1024, f"{name} {ident(config_map)}: {size} bytes of dashboards")
            facts.detail(fact, f"{', '.join(sorted(data))}, {size} bytes")


def inference_container(docs):
    for obj, spec, _ in pod_specs(docs):
        if obj["kind"] == "Deployment" and obj["metadata"]["name"].endswith("-inference"):
            return spec, spec["containers"][0]
    raise AssertionError("no inference Deployment")


def kinds(docs):
    counts = {}
    for obj in docs:
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    return counts


def check_values_files(facts, renders):
    gpu_files = ("gpu-values", "full-values", "nhs-network-values")
    fact = "GPU values give inference the GPU image, CUDA, an nvidia.com/gpu limit, the GPU nodeSelector and toleration"
    for name in gpu_files:
        spec, container = inference_container(renders[name])
        env = env_of(container)
        facts.check(fact, container["resources"].get("limits", {}).get("nvidia.com/gpu", 0) >= 1
                    and env["FXTRIAGE_EXECUTION_PROVIDER"]["value"].startswith("cuda")
                    and "-gpu:" in container["image"]
                    and spec.get("nodeSelector", {}).get("nvidia.com/gpu.present") == "true"
                    and any(toleration.get("key") == "nvidia.com/gpu" for toleration in spec.get("tolerations", [])),
                    f"{name}: inference {container['resources']}, {container['image']}, {spec.get('nodeSelector')}")
    facts.detail(fact, ", ".join(gpu_files))

    fact = "CPU values ask for no GPU anywhere and run inference on the CPU provider"
    for name in ("cpu-values", "minimal-values"):
        spec, container = inference_container(renders[name])
        text = yaml.safe_dump_all(renders[name])
        facts.check(fact, "nvidia.com/gpu" not in text
                    and env_of(container)["FXTRIAGE_EXECUTION_PROVIDER"]["value"] == "cpu"
                    and "-gpu:" not in container["image"],
                    f"{name}: GPU in the render or provider {env_of(container)['FXTRIAGE_EXECUTION_PROVIDER']}")

    fact = "with migration.ownerSecret and serviceRole, the migration Job alone uses the owner's Secret and grants the services' role"
    owner, service_secret = "fxtriage-postgres-owner", "fxtriage-postgres"
    for obj, spec, _ in pod_specs(renders["full-values"]):
        for container in containers(spec):
            env = env_of(container)
            secrets = {variable["valueFrom"]["secretKeyRef"]["name"] for name, variable in env.items()
                       if ("POSTGRES" in name or name == "FXTRIAGE_DATABASE_URL") and "valueFrom" in variable}
            if obj["kind"] == "Job":
                facts.check(fact, secrets == {owner}, f"full-values {ident(obj)} {container['name']}: {secrets}")
                role = env.get("FXTRIAGE_SERVICE_ROLE", {}).get("value")
                wanted = "fxtriage_service" if command_of(container) == "migrate" else None
                facts.check(fact, role == wanted, f"full-values {ident(obj)} {container['name']}: role {role}")
            elif secrets:
                facts.check(fact, secrets == {service_secret} and "FXTRIAGE_SERVICE_ROLE" not in env,
                            f"full-values {ident(obj)} {container['name']}: {secrets}")

    fact = "minimal values: five Deployments, the migration Job, network policies and four budgets by default; no Ingress, HPA, ServiceMonitor, PrometheusRule or dashboards"
    counts = kinds(renders["minimal-values"])
    facts.check(fact, counts.get("Deployment") == 5 and counts.get("Job") == 1 and counts.get("NetworkPolicy") == 6
                and counts.get("PodDisruptionBudget") == 4 and counts.get("ServiceAccount") == 1
                and not any(kind in counts for kind in ("Ingress", "HorizontalPodAutoscaler", "ServiceMonitor",
                                                        "PrometheusRule", "ConfigMap")),
                f"minimal-values: {counts}")

    fact = "full values: Ingress with TLS (API and STOW-RS), HPA, five ServiceMonitors, the PrometheusRule, the dashboards ConfigMap, five budgets, six network policies, the HL7 Service"
    counts = kinds(renders["full-values"])
    names = {obj["metadata"]["name"] for obj in renders["full-values"]}
    facts.check(fact, counts.get("Ingress") == 2 and counts.get("HorizontalPodAutoscaler") == 1
                and counts.get("ServiceMonitor") == 5 and counts.get("PrometheusRule") == 1
                and counts.get("ConfigMap") == 1 and counts.get("PodDisruptionBudget") == 5
                and counts.get("NetworkPolicy") == 6 and "fxtriage-dispatch-hl7" in names,
                f"full-values: {counts}")

    fact = "NHS example: SASL_SSL with the SASL user from a Secret, sslmode=verify-full, S3 in eu-west-2, TLS ingress, ServiceMonitors, the PrometheusRule and dashboards, network policies"
    docs = renders["nhs-network-values"]
    for obj, spec, _ in pod_specs(docs):
        for container in containers(spec):
            env = env_of(container)
            if "FXTRIAGE_KAFKA_PROPERTIES" in env:
                properties = env["FXTRIAGE_KAFKA_PROPERTIES"]["value"]
                facts.check(fact, "security.protocol=SASL_SSL" in properties
                            and "sasl.password=$(SECRET_KAFKA_SASL_PASSWORD)" in properties,
                            f"{ident(obj)}: {properties}")
            if "FXTRIAGE_DATABASE_URL" in env:
                facts.check(fact, "sslmode=verify-full" in env["FXTRIAGE_DATABASE_URL"].get("value", ""),
                            f"{ident(obj)}: no sslmode=verify-full")
            if "FXTRIAGE_S3_REGION" in env:
                facts.check(fact, env["FXTRIAGE_S3_REGION"]["value"] == "eu-west-2", f"{ident(obj)}: S3 region")
    counts = kinds(docs)
    facts.check(fact, counts.get("Ingress") == 1 and counts.get("ServiceMonitor") == 5 and counts.get("PrometheusRule") == 1
                and counts.get("ConfigMap") == 1 and counts.get("NetworkPolicy") == 6,
                f"nhs-network-values: {counts}")


def check_schema(path):
    schema = json.load(open(path))
    if schema.get("$schema") != "http://json-schema.org/draft-07/schema#":
        print(f"{path}: not draft 7")
        return 1
    # Maps of names to strings are closed by their value type; these two pass
    # Kubernetes' (or a parent chart's) objects through unchanged.
    pass_through = {"/definitions/affinity", "/properties/global"}
    open_objects = []

    def walk(node, where):
        if not isinstance(node, dict):
            return
        additional = node.get("additionalProperties")
        closed = additional is False or isinstance(additional, dict)
        if (node.get("type") == "object" and not closed and where not in pass_through) or \
                ("properties" in node and additional is not False):
            open_objects.append(where)
        for key in ("properties", "definitions"):
            for name, sub in node.get(key, {}).items():
                walk(sub, f"{where}/{key}/{name}")
        for key in ("items", "additionalProperties", "not", "propertyNames"):
            walk(node.get(key), f"{where}/{key}")
        for key in ("oneOf", "anyOf", "allOf"):
            for index, sub in enumerate(node.get(key, [])):
                walk(sub, f"{where}/{key}/{index}")

    walk(schema, "")
    if open_objects:
        print(f"{path}: objects without additionalProperties false: {', '.join(open_objects)}")
        return 1
    return 0


def split(out_dir, renders):
    for path in renders:
        name = os.path.splitext(os.path.basename(path))[0]
        docs = load(path)
        crds = [doc for doc in docs if doc["apiVersion"].startswith(CRD_GROUPS)]
        core = [doc for doc in docs if doc not in crds]
        for suffix, part in ((".core", core), (".crd", crds)):
            with open(os.path.join(out_dir, name + suffix), "w") as out:
                yaml.safe_dump_all(part, out, sort_keys=False)
    return 0


def check_facts(render_dir, chart_dir):
    renders = {os.path.splitext(os.path.basename(path))[0]: load(path)
               for path in sorted(glob.glob(os.path.join(render_dir, "*.yaml")))}
    expected = {"cpu-values", "gpu-values", "minimal-values", "full-values", "nhs-network-values"}
    facts = Facts()
    if not facts.check("every values file rendered", expected <= set(renders), f"renders: {sorted(renders)}"):
        return facts.report()
    for name, docs in renders.items():
        check_render(facts, name, docs)
    facts.detail(NO_ROOT, f"{facts.containers} containers in {len(renders)} renders")
    check_values_files(facts, renders)
    check_monitoring_objects(facts, chart_dir, renders)
    return facts.report()


def readme_metrics(readme):
    """The metric names of the Metrics table of README.md (its "### Metrics" section)."""
    text = open(readme).read()
    section = re.search(r"^### Metrics\n(.*?)(?=^#{1,3} )", text, re.S | re.M)
    if not section:
        return set()
    table = [line for line in section.group(1).splitlines() if line.startswith("|")]
    return set(re.findall(r"\bfxtriage_[a-zA-Z0-9_]+", "\n".join(table)))


def metric_names(text):
    """The fxtriage metric names a query uses, without a histogram's _bucket, _sum or _count."""
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"\bfxtriage_[a-zA-Z0-9_]+", text)}


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading."""
    anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return anchor.replace(" ", "-")


def grafana_to_promql(expr):
    """A Grafana query as plain PromQL: its intervals 5m, every other variable a literal."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)(:\w+)?\}?", "5m", expr)
    return re.sub(r"\$\{\w+(:\w+)?\}|\$\w+", "x", expr)


def check_monitoring(chart_dir, readme, out_rules):
    facts = Facts()
    known = readme_metrics(readme)
    fact = "README.md's Metrics table read"
    facts.check(fact, len(known) >= 10, f"{readme}: {len(known)} metric names in the table under ### Metrics")
    facts.detail(fact, f"{len(known)} metric names")
    used = {}  # file -> metric names

    # The alerts: labels, annotations, a runbook that exists.
    alerts_path = os.path.join(chart_dir, ALERTS)
    alerts = yaml.safe_load(open(alerts_path))
    chart_readme = os.path.join(chart_dir, "README.md")
    anchors = {github_anchor(line.lstrip("#")) for line in open(chart_readme) if re.match(r"#{1,6} ", line)}
    fact = (f"{ALERTS}: every alert has a severity (critical, warning), a summary, a description and a runbook "
            f"that is a heading of the chart's README.md")
    names = []
    for group in alerts.get("groups", []):
        for rule in group.get("rules", []):
            used.setdefault(ALERTS, set()).update(metric_names(rule.get("expr", "")))
            if "alert" not in rule:
                continue
            name = rule["alert"]
            names.append(name)
            annotations = rule.get("annotations", {})
            facts.check(fact, rule.get("labels", {}).get("severity") in ("critical", "warning"),
                        f"{name}: severity {rule.get('labels', {}).get('severity')!r}")
            missing = [key for key in ("summary", "description", "runbook") if not annotations.get(key)]
            facts.check(fact, not missing, f"{name}: no {', '.join(missing)}")
            runbook = annotations.get("runbook", "")
            path, _, anchor = runbook.partition("#")
            facts.check(fact, path == "helm/fxtriage/README.md" and anchor in anchors,
                        f"{name}: runbook {runbook!r} is not a heading of helm/fxtriage/README.md")
    facts.check(fact, len(names) == len(set(names)), f"alert names repeat: {names}")
    facts.detail(fact, f"{len(names)} alerts")

    # Their tests: a case where each fires and one where it stays silent.
    tests = yaml.safe_load(open(os.path.join(chart_dir, ALERT_TESTS)))
    fact = f"{ALERT_TESTS}: each alert has a case where it fires and one where it must not"
    fires, silent = set(), set()
    for test in tests.get("tests", []):
        for series in test.get("input_series", []):
            used.setdefault(ALERT_TESTS, set()).update(metric_names(series["series"]))
        for case in test.get("promql_expr_test", []):
            used.setdefault(ALERT_TESTS, set()).update(metric_names(case["expr"]))
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    facts.check(fact, tests.get("rule_files") == [os.path.basename(ALERTS)], f"rule_files {tests.get('rule_files')}")
    for name in names:
        facts.check(fact, name in fires and name in silent,
                    f"{name}: {'no firing case' if name not in fires else 'no silent case'}")
    facts.check(fact, (fires | silent) <= set(names), f"tests of unknown alerts {sorted((fires | silent) - set(names))}")

    # The dashboards.
    fact = (f"{DASHBOARDS}/*.json: parse, schemaVersion 39, a ${{datasource}} Prometheus variable every query uses, "
            f"no external links, unique uids and panel ids")
    found = sorted(name for name in os.listdir(os.path.join(chart_dir, DASHBOARDS)))
    facts.check(fact, found == sorted(DASHBOARD_FILES), f"{DASHBOARDS}: {found}, expected {sorted(DASHBOARD_FILES)}")
    groups, uids, queries = [], [], 0
    for file_name in found:
        path = f"{DASHBOARDS}/{file_name}"
        try:
            board = json.load(open(os.path.join(chart_dir, path)))
        except ValueError as error:
            facts.check(fact, False, f"{path}: {error}")
            continue
        uids.append(board.get("uid"))
        facts.check(fact, board.get("schemaVersion") == 39, f"{path}: schemaVersion {board.get('schemaVersion')}")
        variables = board.get("templating", {}).get("list", [])
        facts.check(fact, any(var.get("name") == "datasource" and var.get("type") == "datasource"
                              and var.get("query") == "prometheus" for var in variables),
                    f"{path}: no datasource variable of type prometheus")
        facts.check(fact, not board.get("links") and "__inputs" not in board, f"{path}: links {board.get('links')}")
        strings = []

        def walk(node):
            if isinstance(node, dict):
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
            elif isinstance(node, str):
                strings.append(node)
        walk(board)
        external = [text for text in strings if re.search(r"https?://", text)]
        facts.check(fact, not external, f"{path}: external addresses {external[:3]}")
        panels = [panel for panel in board.get("panels", [])]
        panels += [inner for panel in panels for inner in panel.get("panels", [])]
        ids = [panel.get("id") for panel in panels]
        facts.check(fact, len(ids) == len(set(ids)), f"{path}: panel ids repeat")
        rules = []
        # Record names unique across the dashboards (promtool lints repeats).
        prefix = "dashboard:" + re.sub(r"\W", "_", file_name.removesuffix(".json")) + ":"
        for var in variables:
            if var.get("type") != "query":
                continue
            query = var.get("query")
            query = query.get("query", "") if isinstance(query, dict) else query or ""
            facts.check(fact, var.get("datasource", {}).get("uid") == "${datasource}",
                        f"{path}: variable {var.get('name')} does not use ${{datasource}}")
            inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
            selector = inner.group(1) if inner else query
            used.setdefault(path, set()).update(metric_names(selector))
            rules.append({"record": f"{prefix}variable_{var['name']}", "expr": grafana_to_promql(selector)})
        for panel in panels:
            if panel.get("type") == "row":
                continue
            facts.check(fact, panel.get("datasource", {}).get("uid") == "${datasource}",
                        f"{path}: panel {panel.get('id')} {panel.get('title')!r} does not use ${{datasource}}")
            facts.check(fact, not panel.get("links"), f"{path}: panel {panel.get('id')} has links")
            for target in panel.get("targets", []):
                facts.check(fact, target.get("datasource", {}).get("uid") == "${datasource}" and target.get("expr"),
                            f"{path}: panel {panel.get('id')} query {target.get('refId')} has no expr or another data source")
                used.setdefault(path, set()).update(metric_names(target.get("expr", "")))
                rules.append({"record": f"{prefix}panel_{panel.get('id')}_{target.get('refId')}",
                              "expr": grafana_to_promql(target.get("expr", ""))})
                for operator, jobs in re.findall(r'job\s*(=~|=)\s*"([^"]*)"', target.get("expr", "")):
                    facts.check(fact, set(jobs.split("|")) <= set(COMPONENTS),
                                f"{path}: panel {panel.get('id')} names jobs {jobs}, the ServiceMonitors make {COMPONENTS}")
        queries += len(rules)
        groups.append({"name": path, "rules": rules})
    facts.check(fact, len(uids) == len(set(uids)) and all(uids), f"dashboard uids {uids}")
    facts.detail(fact, f"{len(found)} dashboards, {queries} queries")
    with open(out_rules, "w") as out:
        out.write(f"# The queries of {DASHBOARDS}/*.json as recording rules, for promtool check rules.\n")
        yaml.safe_dump({"groups": groups}, out, sort_keys=False, width=1000)

    # Every metric name against README.md's table.
    fact = "every fxtriage metric the alerts, their tests and the dashboards use is in README.md's Metrics table"
    for path, names_used in sorted(used.items()):
        unknown = sorted(names_used - known)
        facts.check(fact, not unknown, f"{path}: unknown metric {', '.join(unknown)} (not in README.md's Metrics table)")
    facts.detail(fact, f"{len(set().union(*used.values()))} names in {len(used)} files")
    return facts.report()


def main():
    command, arguments = sys.argv[1], sys.argv[2:]
    if command == "schema":
        return check_schema(*arguments)
    if command == "split":
        return split(arguments[0], arguments[1:])
    if command == "facts":
        return check_facts(*arguments)
    if command == "monitoring":
        return check_monitoring(*arguments)
    print(f"unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
