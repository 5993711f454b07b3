"""Checks deploy/template.yaml as CloudFormation would deploy it, offline.

The template is translated by samtranslator (the SAM transform CloudFormation runs) for a few
parameter combinations, its intrinsic functions are resolved for those parameters, and the
resulting resources are checked against what streamseal needs and may do:

- no role of a function carries a managed policy (SAM's AWSLambdaDynamoDBExecutionRole,
  AWSLambdaSQSQueueExecutionRole, AWSLambdaBasicExecutionRole... grant on Resource "*"); other
  roles carry only the managed policies listed in ALLOWED_MANAGED_POLICIES, with the reason;
- the ingest role may put objects only under the prefixes capture writes, the seal role only
  under the ones seal, verify and restore write, and each deletes only what it must (a small
  evaluator of the roles' Allow statements, IAM wildcards included);
- the bucket policy denies a PutObject without If-None-Match (s3:if-none-match) on every
  write-once prefix and not on the rewritten objects, refuses encryption other than the
  stack's key, and leaves requests relying on the bucket's default encryption alone (an
  evaluator of its Deny statements: Resource wildcards, Null/String/Bool/Numeric conditions);
- the topic and the queues use the stack's own KMS key (never alias/aws/sns or alias/aws/sqs),
  whose policy lets CloudWatch only GenerateDataKey*/Decrypt, in this account;
- no EventBridge Scheduler schedule has a fixed Name;
- the state machine definition, with its DefinitionSubstitutions applied: every Task has
  Retry, Catch and TimeoutSeconds (Lambda tasks longer than the function's timeout), no state
  keeps a whole Lambda reply ($.Payload or $), verify is quick (deep: false), and the routing
  Choice states send each documented input where the outputs' text says (evaluated here with
  Step Functions' rule that comparing a missing field is a runtime error);
- the event source mapping discards batches before the stream's 24-hour retention, the
  queues are retained, the functions log to the stack's log groups (LoggingConfig), and both
  functions get STREAMSEAL_TARGET_REGION as documented;
- the state machine passes asl-validator (npm, tests/support/node_modules) when installed.

Usage: check_template.py TEMPLATE. Prints a summary and exits 0, or prints every failed check
and exits 1.
"""

import copy
import fnmatch
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# samtranslator warns about its own usage metrics when it is garbage-collected.
logging.getLogger("samtranslator").setLevel(logging.ERROR)

from cfnlint.decode import decode  # noqa: E402
from samtranslator.translator.transform import transform  # noqa: E402

ACCOUNT = "123456789012"
TABLE = "orders"
PREFIX = "backups"

# Managed policies a role may carry, with why. None for the functions' roles.
ALLOWED_MANAGED_POLICIES = {
    # SAM attaches it to a state machine with Tracing enabled; X-Ray actions have no
    # resource-level permissions, so no grant could be narrower.
    ("RecoveryStateMachineRole", "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"),
}

# Parameter combinations: (name, region, parameters, facts the checks use).
COMBINATIONS = [
    (
        "capture side, bucket created here",
        "us-east-1",
        {
            "TableName": TABLE,
            "StreamArn": f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{TABLE}/stream/2026-01-01T00:00:00.000",
            "SchemaLocation": "s3://schemas-bucket/schemas",
            "ObjectLockRetentionDays": "35",
            "RestoreOnOutage": "false",
        },
        {"bucket": "created-backup-bucket", "target_region": "us-east-1"},
    ),
    (
        "capture side, existing bucket in the recovery region",
        "eu-west-1",
        {
            "TableName": TABLE,
            "StreamArn": f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/{TABLE}/stream/2026-01-01T00:00:00.000",
            "BackupBucketName": "acme-orders-backup",
            "BackupKmsKeyArn": f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/0f0e0d0c-0b0a-0908-0706-050403020100",
            "BackupBucketRegion": "eu-central-1",
            "AlarmNames": "orders-system-errors,orders-latency",
        },
        {"bucket": "acme-orders-backup", "target_region": "eu-central-1"},
    ),
    (
        "capture side, existing bucket, region discovered",
        "eu-west-1",
        {
            "TableName": TABLE,
            "StreamArn": f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/{TABLE}/stream/2026-01-01T00:00:00.000",
            "BackupBucketName": "acme-orders-backup",
            "BackupKmsKeyArn": f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/0f0e0d0c-0b0a-0908-0706-050403020100",
        },
        {"bucket": "acme-orders-backup", "target_region": ""},
    ),
    (
        "recovery side (no stream), bucket created here",
        "eu-central-1",
        {"TableName": TABLE, "RestoreOnOutage": "true"},
        {"bucket": "created-backup-bucket", "target_region": "eu-central-1"},
    ),
]

failures = []
passes = []


def check(ok, what):
    (passes if ok else failures).append(what)
    return ok


def guarded(label, fn, *args):
    """Runs a group of checks; a template too different to check (a missing resource or
    property) is a failed check, not a crash."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        check(False, f"{label}: {fn.__name__} could not run: {type(e).__name__}: {e}")
        return None


# ------------------------------------------------------------------ intrinsic functions

NO_VALUE = object()


class Stack:
    """A translated template with its parameters, resolved the way CloudFormation would."""

    def __init__(self, template, region, params, bucket):
        self.t = template
        self.region = region
        self.bucket = bucket
        self.params = {}
        for name, p in template.get("Parameters", {}).items():
            v = params.get(name, p.get("Default", ""))
            if p.get("Type") == "CommaDelimitedList":
                v = [x.strip() for x in str(v).split(",")] if v != "" else [""]
            self.params[name] = v if isinstance(v, list) else str(v)
        self.params.update(
            {
                "AWS::Region": region,
                "AWS::AccountId": ACCOUNT,
                "AWS::Partition": "aws",
                "AWS::StackName": "streamseal-orders",
                "AWS::URLSuffix": "amazonaws.com",
            }
        )
        self.conditions = {}
        self.resources = {
            name: r
            for name, r in template["Resources"].items()
            if "Condition" not in r or self.condition(r["Condition"])
        }

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.eval(self.t["Conditions"][name]))
        return self.conditions[name]

    def physical(self, name):
        if name in self.params:
            return self.params[name]
        r = self.t["Resources"][name]
        ty = r["Type"]
        return {
            "AWS::S3::Bucket": self.bucket,
            "AWS::KMS::Key": f"key-{name.lower()}",
            "AWS::SNS::Topic": f"arn:aws:sns:{self.region}:{ACCOUNT}:{name}",
            "AWS::SQS::Queue": f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT}/{name}",
            "AWS::Logs::LogGroup": r["Properties"].get("LogGroupName") and self.eval(r["Properties"]["LogGroupName"]) or f"streamseal-orders-{name}-ABC",
            "AWS::StepFunctions::StateMachine": f"arn:aws:states:{self.region}:{ACCOUNT}:stateMachine:{name}",
        }.get(ty, f"streamseal-orders-{name}")

    def get_att(self, name, attr):
        ty = self.t["Resources"][name]["Type"]
        phys = self.physical(name)
        table = {
            ("AWS::S3::Bucket", "Arn"): f"arn:aws:s3:::{phys}",
            ("AWS::KMS::Key", "Arn"): f"arn:aws:kms:{self.region}:{ACCOUNT}:key/{phys}",
            ("AWS::SQS::Queue", "Arn"): f"arn:aws:sqs:{self.region}:{ACCOUNT}:{name}",
            ("AWS::SQS::Queue", "QueueName"): name,
            ("AWS::SNS::Topic", "TopicName"): name,
            ("AWS::SNS::Topic", "TopicArn"): phys,
            ("AWS::Logs::LogGroup", "Arn"): f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:{phys}:*",
            ("AWS::Lambda::Function", "Arn"): f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{phys}",
            ("AWS::IAM::Role", "Arn"): f"arn:aws:iam::{ACCOUNT}:role/{phys}",
            ("AWS::StepFunctions::StateMachine", "Name"): name,
        }
        if (ty, attr) not in table:
            raise KeyError(f"GetAtt {name}.{attr} ({ty}) is not modelled")
        return table[(ty, attr)]

    def sub(self, text, variables):
        def one(m):
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                v = self.eval(variables[inner])
            elif "." in inner and inner.split(".")[0] in self.t["Resources"]:
                n, a = inner.split(".", 1)
                v = self.get_att(n, a)
            else:
                v = self.physical(inner)
            return v if isinstance(v, str) else json.dumps(v)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def eval(self, v):
        if isinstance(v, list):
            return [x for x in (self.eval(x) for x in v) if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, arg), = v.items()
            if k == "Ref":
                return NO_VALUE if arg == "AWS::NoValue" else self.physical(arg)
            if k == "Fn::GetAtt":
                n, a = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(n, a)
            if k == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                return self.sub(text, variables)
            if k == "Fn::If":
                return self.eval(arg[1] if self.condition(arg[0]) else arg[2])
            if k == "Fn::Equals":
                a, b = (self.eval(x) for x in arg)
                return str(a) == str(b)
            if k == "Fn::Not":
                return not self.eval(arg[0])
            if k == "Fn::And":
                return all(self.eval(x) for x in arg)
            if k == "Fn::Or":
                return any(self.eval(x) for x in arg)
            if k == "Condition":
                return self.condition(arg)
            if k == "Fn::Join":
                return arg[0].join(str(x) for x in self.eval(arg[1]))
            if k == "Fn::Split":
                return str(self.eval(arg[1])).split(arg[0])
            if k == "Fn::Select":
                return self.eval(arg[1])[int(self.eval(arg[0]))]
            if k.startswith("Fn::"):
                raise KeyError(f"{k} is not modelled")
        return {
            key: val
            for key, val in ((key, self.eval(val)) for key, val in v.items())
            if val is not NO_VALUE
        }

    def props(self, name):
        return self.eval(self.resources[name].get("Properties", {}))

    def of_type(self, ty):
        return [n for n, r in self.resources.items() if r["Type"] == ty]


# ------------------------------------------------------------------ IAM evaluation


def as_list(x):
    return x if isinstance(x, list) else [x]


def wildcard(pattern, value):
    """IAM wildcards: * any run of characters (slashes too), ? one character."""
    return re.fullmatch(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
        value,
        re.S,
    ) is not None


def action_matches(stmt, action):
    if "Action" in stmt:
        return any(wildcard(a.lower(), action.lower()) for a in as_list(stmt["Action"]))
    return not any(wildcard(a.lower(), action.lower()) for a in as_list(stmt["NotAction"]))


def resource_matches(stmt, arn):
    if "Resource" in stmt:
        return any(wildcard(r, arn) for r in as_list(stmt["Resource"]))
    return not any(wildcard(r, arn) for r in as_list(stmt["NotResource"]))


def condition_holds(cond, ctx):
    """Every operator and key of a Condition block, for a request context {key: [values]}."""
    for op, keys in (cond or {}).items():
        for key, wanted in keys.items():
            wanted = [str(w).lower() if isinstance(w, bool) else str(w) for w in as_list(wanted)]
            have = ctx.get(key)
            if op == "Null":
                if (have is None) != (wanted[0] == "true"):
                    return False
                continue
            negated = op.startswith("StringNot") or op.startswith("ArnNot")
            if have is None:
                if negated:
                    continue
                return False
            have = as_list(have)
            if op in ("StringEquals", "ArnEquals"):
                ok = any(h == w for h in have for w in wanted)
            elif op in ("StringNotEquals", "ArnNotEquals"):
                ok = not any(h == w for h in have for w in wanted)
            elif op in ("StringLike", "ArnLike"):
                ok = any(wildcard(w, h) for h in have for w in wanted)
            elif op in ("StringNotLike", "ArnNotLike"):
                ok = not any(wildcard(w, h) for h in have for w in wanted)
            elif op == "Bool":
                ok = any(str(h).lower() == w for h in have for w in wanted)
            elif op == "NumericLessThan":
                ok = any(float(h) < float(w) for h in have for w in wanted)
            else:
                raise KeyError(f"condition operator {op} is not modelled")
            if not ok:
                return False
    return True


def statements(policy_document):
    return as_list(policy_document.get("Statement", []))


def role_statements(stack, role):
    p = stack.props(role)
    out = []
    for pol in p.get("Policies", []):
        out += statements(pol["PolicyDocument"])
    return out


def role_of(stack, function):
    """The logical id of the role a function runs as."""
    role = stack.resources[function]["Properties"]["Role"]
    att = role["Fn::GetAtt"]
    return att[0] if isinstance(att, list) else att.split(".")[0]


def allows(stmts, action, arn, ctx=None):
    ctx = ctx or {}
    allowed = any(
        s["Effect"] == "Allow" and action_matches(s, action) and resource_matches(s, arn)
        and condition_holds(s.get("Condition"), ctx)
        for s in stmts
    )
    denied = any(
        s["Effect"] == "Deny" and action_matches(s, action) and resource_matches(s, arn)
        and condition_holds(s.get("Condition"), ctx)
        for s in stmts
    )
    return allowed and not denied


def denying(stmts, action, arn, ctx):
    return [
        s.get("Sid", "?")
        for s in stmts
        if s["Effect"] == "Deny" and action_matches(s, action) and resource_matches(s, arn)
        and condition_holds(s.get("Condition"), ctx)
    ]


# ------------------------------------------------------------------ object keys (src/model/layout.rs)

SEQ = "0" * 30 + "1234567890"
SEQ2 = "0" * 30 + "1234567999"
WRITE_ONCE = {
    "changes/": f"changes/dt=2026-01-01/hr=00/{SEQ}-{SEQ2}-3fa19c2b.parquet",
    "changes/ (compacted)": "changes/dt=2026-01-01/hr=00/c-0000000007-9a8b7c6d.parquet",
    "inbox/": f"inbox/s-{SEQ}-{SEQ2}-3fa19c2b.json",
    "quarantine/": "quarantine/" + "ab" * 32 + ".json",
    "base/": "base/1767225600000/part-0000-1.parquet",
    "base/ manifest": "base/1767225600000/base.json",
    "snapshots/<generation>.json": "snapshots/0000000001.json",
    "snapshots/ (a later generation)": "snapshots/9000000123.json",
    "snapshot-files/": "snapshot-files/0000000001-0123456789abcdef.json",
    "findings/": "findings/0000000001-0123456789abcdef.json",
    "locks/": "locks/restore-2026-01-01T04.json",
    "reports/": "reports/0000000001-seal-3fa19c2b.json",
}
REWRITTEN = {
    "snapshots/head.json": "snapshots/head.json",
    "shards/": "shards/2026-01-01T00:00:00.000.json",
    "checkpoints/": "checkpoints/shardId-00000001767225600000-0123abcd.json",
    "restores/": "restores/0123456789abcdef.json",
    "athena/ (snapshot list)": "athena/snapshot-files/generation=0000000001/symlink.txt",
    "athena/ (base list)": "athena/base-files/symlink.txt",
    "compaction/": "compaction/cleaned.json",
}
INGEST_WRITES = ["changes/", "inbox/", "quarantine/", "shards/"]
INGEST_NEVER = ["snapshots/<generation>.json", "snapshots/head.json", "snapshot-files/", "restores/",
                "findings/", "athena/ (snapshot list)", "base/", "checkpoints/", "reports/", "locks/",
                "compaction/"]
SEAL_WRITES = ["snapshots/<generation>.json", "snapshots/head.json", "snapshot-files/", "findings/",
               "athena/ (snapshot list)", "athena/ (base list)", "restores/", "reports/", "locks/"]
SEAL_NEVER = ["changes/", "inbox/", "quarantine/", "shards/", "base/", "checkpoints/", "compaction/"]
SEAL_DELETES = ["inbox/", "restores/", "locks/"]
ALL_KEYS = {**WRITE_ONCE, **REWRITTEN}


def object_arn(bucket, what, table=TABLE):
    return f"arn:aws:s3:::{bucket}/{PREFIX}/{table}/{ALL_KEYS[what]}"


# ------------------------------------------------------------------ the state machine


class Runtime(Exception):
    pass


EXECUTION = {"Execution": {"Id": f"arn:aws:states:us-east-1:{ACCOUNT}:execution:recovery:check",
                           "StartTime": "2026-01-01T04:00:00.000Z"}}


def path_get(data, path):
    if path.startswith("$$."):
        data, path = EXECUTION, path[1:]
    if path == "$":
        return data
    cur = data
    for part in path[2:].split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise Runtime(f"path {path} not in the input")
        cur = cur[part]
    return cur


def intrinsic(data, e):
    e = e.strip()
    if e.startswith("$"):
        return path_get(data, e)
    m = re.fullmatch(r"States\.JsonMerge\((.*)\)", e, re.S)
    if m:
        a, b, deep = [x.strip() for x in m.group(1).split(",")]
        merged = dict(intrinsic(data, a))
        merged.update(intrinsic(data, b))
        return merged
    raise Runtime(f"intrinsic {e} is not modelled here")


def parameters(template, data):
    if isinstance(template, dict):
        out = {}
        for k, v in template.items():
            if k.endswith(".$"):
                out[k[:-2]] = intrinsic(data, v)
            else:
                out[k] = parameters(v, data)
        return out
    return template


def choose(rule, data):
    """A Choice rule as Step Functions evaluates it: comparing a missing field fails."""
    var = rule["Variable"]
    if "IsPresent" in rule:
        try:
            path_get(data, var)
            present = True
        except Runtime:
            present = False
        return present == rule["IsPresent"]
    value = path_get(data, var)  # raises: States.Runtime
    if "StringEquals" in rule:
        return isinstance(value, str) and value == rule["StringEquals"]
    if "BooleanEquals" in rule:
        return isinstance(value, bool) and value == rule["BooleanEquals"]
    if "IsNull" in rule:
        return (value is None) == rule["IsNull"]
    raise Runtime(f"choice rule {rule} is not modelled here")


def route(definition, data):
    """Runs the definition's routing prefix (Choice and Pass states) up to its first Task:
    returns (task name, its input)."""
    name = definition["StartAt"]
    states = definition["States"]
    for _ in range(50):
        s = states[name]
        if s["Type"] == "Choice":
            nxt = next((c["Next"] for c in s["Choices"] if choose(c, data)), s.get("Default"))
            if nxt is None:
                raise Runtime(f"{name}: no choice matched and no Default")
            name = nxt
        elif s["Type"] == "Pass":
            result = parameters(s["Parameters"], data) if "Parameters" in s else data
            rp = s.get("ResultPath", "$")
            if rp == "$":
                data = result
            elif rp is not None:
                data = dict(data)
                data[rp[2:]] = result
            name = s["Next"]
        else:
            return name, data
    raise Runtime("no Task reached")


def walk_states(states, scope="", out=None):
    out = [] if out is None else out
    for name, s in states.items():
        out.append((scope + name, s))
        if s["Type"] == "Map":
            proc = s.get("ItemProcessor") or s.get("Iterator")
            walk_states(proc["States"], scope + name + "/", out)
        if s["Type"] == "Parallel":
            for i, b in enumerate(s["Branches"]):
                walk_states(b["States"], f"{scope}{name}[{i}]/", out)
    return out


def dollar_values(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.endswith(".$"):
                yield k, v
            else:
                yield from dollar_values(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from dollar_values(v)


def definition_of(stack):
    sm = stack.props("RecoveryStateMachine")
    text = sm["DefinitionString"]
    subs = sm.get("DefinitionSubstitutions", {})
    for k, v in subs.items():
        text = text.replace("${" + k + "}", str(v))
    left = re.findall(r"\$\{[A-Za-z0-9_]+\}", text)
    check(not left, f"every ${{...}} of the definition is substituted (left: {left})")
    return json.loads(text)


def check_state_machine(stack, label):
    d = definition_of(stack)
    functions = {
        stack.get_att(f, "Arn"): int(stack.props(f).get("Timeout", 3))
        for f in stack.of_type("AWS::Lambda::Function")
    }
    states = walk_states(d["States"])
    tasks = [(n, s) for n, s in states if s["Type"] == "Task"]
    check(tasks, f"{label}: the state machine has Task states")
    for name, s in tasks:
        check(bool(s.get("Retry")), f"{label}: Task {name} has Retry")
        check(bool(s.get("Catch")), f"{label}: Task {name} has Catch")
        check("TimeoutSeconds" in s or "TimeoutSecondsPath" in s, f"{label}: Task {name} has TimeoutSeconds")
        if s["Resource"] == "arn:aws:states:::lambda:invoke":
            fn = s["Parameters"].get("FunctionName")
            limit = functions.get(fn)
            check(limit is not None, f"{label}: Task {name} invokes a function of the stack ({fn})")
            if limit is not None:
                check(
                    s.get("TimeoutSeconds", 0) > limit,
                    f"{label}: Task {name} times out after its function ({s.get('TimeoutSeconds')} s > {limit} s)",
                )
            check(
                "ResultSelector" in s or s.get("ResultPath", "$") is None,
                f"{label}: Task {name} keeps only selected fields of the Lambda reply (ResultSelector)",
            )
            for k, v in dollar_values(s.get("ResultSelector", {})):
                check(
                    v.strip() not in ("$", "$.Payload"),
                    f"{label}: Task {name} ResultSelector {k} does not keep the whole reply ({v})",
                )
            check(
                s.get("OutputPath", "$") not in ("$.Payload",),
                f"{label}: Task {name} OutputPath does not pass the whole reply",
            )
            payload = s["Parameters"].get("Payload", {})
            if isinstance(payload, dict) and payload.get("action") == "verify":
                check(payload.get("deep") is False, f"{label}: Task {name} verifies quickly (deep: false)")
    # No state copies a Lambda reply whole.
    for name, s in states:
        for field in ("Parameters", "ItemSelector", "ResultSelector"):
            for k, v in dollar_values(s.get(field, {})):
                check(
                    not re.search(r"\.Payload$", v.strip()),
                    f"{label}: {name} {field}.{k} does not pass a whole Lambda Payload ({v})",
                )
        for field in ("OutputPath", "InputPath", "ItemsPath"):
            v = s.get(field)
            if isinstance(v, str) and v.endswith(".Payload"):
                check(False, f"{label}: {name} {field} does not pass a whole Lambda Payload ({v})")

    # Routing: what each documented input starts.
    restore_on_outage = stack.params["RestoreOnOutage"]
    alarm = {
        "source": "aws.cloudwatch",
        "detail-type": "CloudWatch Alarm State Change",
        "detail": {"alarmName": "orders-system-errors", "state": {"value": "ALARM"}},
    }
    cases = [
        # Outage inputs reach the function as they are, with the execution's id added (outage
        # runs of a table are de-duplicated by it).
        ("a CloudWatch alarm event", alarm, {"drill": False, "restore": restore_on_outage,
         "event": {**alarm, "execution": EXECUTION["Execution"]["Id"]}}),
        ('{"action": "seal", "table": "orders"}', {"action": "seal", "table": TABLE},
         {"drill": False, "restore": restore_on_outage,
          "event": {"action": "seal", "table": TABLE, "execution": EXECUTION["Execution"]["Id"]}}),
        ('{"drill": false}', {"action": "seal", "drill": False},
         {"drill": False, "restore": restore_on_outage}),
        ('{"drill": true} (the schedule input)', json.loads(stack.props(
            [n for n in stack.of_type("AWS::Scheduler::Schedule")][0])["Target"]["Input"]),
         {"drill": True, "restore": "true", "action": "seal", "execution": EXECUTION["Execution"]["Id"]}),
        ('{"drill": true} alone', {"drill": True},
         {"drill": True, "restore": "true", "action": "seal", "execution": EXECUTION["Execution"]["Id"]}),
        ('{"action": "restore"}', {"action": "restore"}, {"drill": False, "restore": "true", "action": "seal"}),
        ('{"action": "restore", "table", "reason"}', {"action": "restore", "table": TABLE, "reason": "INC-1"},
         {"drill": False, "restore": "true", "action": "seal", "table": TABLE, "reason": "INC-1"}),
        ('{"action": "restore", "drill": false}', {"action": "restore", "drill": False},
         {"drill": False, "restore": "true", "action": "seal"}),
        ('{"action": "seal", "restore": true}', {"action": "seal", "restore": True, "table": TABLE},
         {"drill": False, "restore": "true", "action": "seal", "table": TABLE}),
        ('{"action": "seal", "restore": false}', {"action": "seal", "restore": False},
         {"drill": False, "restore": restore_on_outage, "action": "seal"}),
    ]
    for what, given, want in cases:
        try:
            task, data = route(d, given)
        except Runtime as e:
            check(False, f"{label}: input {what} routes without a runtime error ({e})")
            continue
        check(task == "Seal", f"{label}: input {what} reaches the Seal task (reached {task})")
        event = data.get("event", {})
        check(data.get("drill") is want["drill"], f"{label}: input {what} runs with drill={want['drill']} (got {data.get('drill')})")
        check(data.get("restore") == want["restore"], f"{label}: input {what} restores={want['restore']!r} (got {data.get('restore')!r})")
        if "event" in want:
            check(event == want["event"], f"{label}: input {what} reaches the function as it is, with the execution id")
        if want["drill"]:
            check(event.get("drill") is True, f"{label}: input {what} tells the seal it is a drill (de-duplicated among drills)")
        for k in ("action", "table", "reason", "execution"):
            if k in want:
                check(event.get(k) == want[k], f"{label}: input {what} gives the seal {k}={want[k]!r} (got {event.get(k)!r})")
    return d


def asl_validate(definition, label):
    tool = Path(__file__).resolve().parent / "node_modules" / ".bin" / "asl-validator"
    if not tool.exists():
        return "asl-validator not installed, skipped"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(definition, f)
        path = f.name
    try:
        out = subprocess.run([str(tool), "--json-path", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    check(out.returncode == 0, f"{label}: asl-validator accepts the definition: {(out.stdout + out.stderr).strip()}")
    return "asl-validator: the definition is valid" if out.returncode == 0 else "asl-validator: INVALID"


# ------------------------------------------------------------------ the checks


def check_roles(stack, label):
    function_roles = {role_of(stack, f) for f in stack.of_type("AWS::Lambda::Function")}
    for role in sorted(stack.of_type("AWS::IAM::Role")):
        managed = stack.props(role).get("ManagedPolicyArns", [])
        for arn in managed:
            if role in function_roles:
                check(False, f"{label}: function role {role} carries no managed policy (has {arn})")
            else:
                check((role, arn) in ALLOWED_MANAGED_POLICIES, f"{label}: role {role} carries only allowed managed policies (has {arn})")
        if role in function_roles:
            check(not managed, f"{label}: function role {role} carries no managed policy")
            for s in role_statements(stack, role):
                if s["Effect"] == "Allow" and "*" in as_list(s.get("Resource", [])):
                    acts = as_list(s["Action"])
                    check(
                        all(a.startswith("xray:") or a == "dynamodb:ListStreams" for a in acts),
                        f"{label}: {role} grants Resource \"*\" only for actions without resource types ({acts})",
                    )
    return function_roles


def check_s3_grants(stack, label, facts):
    bucket = facts["bucket"]
    if "IngestFunction" in stack.resources:
        st = role_statements(stack, role_of(stack, "IngestFunction"))
        for what in INGEST_WRITES:
            check(allows(st, "s3:PutObject", object_arn(bucket, what)), f"{label}: ingest role can put {what}")
            check(allows(st, "s3:GetObject", object_arn(bucket, what)), f"{label}: ingest role can read back {what}")
        for what in INGEST_NEVER:
            check(not allows(st, "s3:PutObject", object_arn(bucket, what)), f"{label}: ingest role cannot put {what}")
        for what in ALL_KEYS:
            check(not allows(st, "s3:DeleteObject", object_arn(bucket, what)), f"{label}: ingest role cannot delete {what}")
        check(not allows(st, "s3:PutObject", object_arn(bucket, "changes/", table="other-table")),
              f"{label}: ingest role cannot put another table's changes/")
        check(allows(st, "s3:ListBucket", f"arn:aws:s3:::{bucket}"), f"{label}: ingest role may list the bucket (404 for a missing key)")
        if stack.params["SchemaLocation"]:
            loc = stack.params["SchemaLocation"][len("s3://"):]
            check(allows(st, "s3:GetObject", f"arn:aws:s3:::{loc}/{TABLE}.toml"), f"{label}: ingest role reads its schema file")
            check(allows(st, "s3:ListBucket", f"arn:aws:s3:::{loc.split('/')[0]}"), f"{label}: ingest role may list the schema bucket (404 for a missing schema)")
            check(not allows(st, "s3:GetObject", f"arn:aws:s3:::{loc}/other-table.toml"), f"{label}: ingest role reads no other schema file")
        stream = stack.params["StreamArn"]
        for a in ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"):
            check(allows(st, a, stream), f"{label}: ingest role may {a} on its stream")
        check(not allows(st, "dynamodb:GetRecords", stream.replace(f"table/{TABLE}/", "table/other/")),
              f"{label}: ingest role reads no other stream")
        table_arn = stream.split("/stream/")[0]
        for a in ("dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive"):
            check(allows(st, a, table_arn), f"{label}: ingest role may {a} on its table")
        for a in ("dynamodb:GetItem", "dynamodb:Scan", "dynamodb:PutItem", "dynamodb:DeleteTable"):
            check(not allows(st, a, table_arn), f"{label}: ingest role may not {a} on its table")
        queue = stack.get_att("OnFailureQueue", "Arn")
        for a in ("sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
            check(allows(st, a, queue), f"{label}: ingest role may {a} on the on-failure queue")
        group = stack.resources["IngestFunction"]["Properties"].get("LoggingConfig", {}).get("LogGroup", {}).get("Ref", "IngestLogs")
        logs = stack.get_att(group, "Arn")
        check(allows(st, "logs:PutLogEvents", logs.replace(":*", ":log-stream:2026/01/01/x")), f"{label}: ingest role logs to its log group")
        check(not allows(st, "logs:PutLogEvents", f"arn:aws:logs:{stack.region}:{ACCOUNT}:log-group:other:log-stream:x"),
              f"{label}: ingest role logs to no other log group")
    st = role_statements(stack, role_of(stack, "SealFunction"))
    for what in SEAL_WRITES:
        check(allows(st, "s3:PutObject", object_arn(bucket, what)), f"{label}: seal role can put {what}")
    for what in SEAL_NEVER:
        check(not allows(st, "s3:PutObject", object_arn(bucket, what)), f"{label}: seal role cannot put {what}")
    for what in ALL_KEYS:
        check(allows(st, "s3:DeleteObject", object_arn(bucket, what)) == (what in SEAL_DELETES),
              f"{label}: seal role {'can' if what in SEAL_DELETES else 'cannot'} delete {what}")
        check(allows(st, "s3:GetObject", object_arn(bucket, what)), f"{label}: seal role can read {what}")
    check(not allows(st, "s3:GetObject", object_arn(bucket, "changes/", table="other-table")),
          f"{label}: seal role cannot read another table's backup")
    check(allows(st, "s3:ListBucket", f"arn:aws:s3:::{bucket}"), f"{label}: seal role may list the bucket")


def check_bucket_policy(stack, label, facts):
    if "BackupBucketPolicy" not in stack.resources:
        return
    st = statements(stack.props("BackupBucketPolicy")["PolicyDocument"])
    bucket = facts["bucket"]
    key_arn = stack.get_att("BackupKey", "Arn")
    base = {"aws:SecureTransport": "true", "s3:TlsVersion": "1.3"}
    inm = {**base, "s3:if-none-match": "*"}
    for what in WRITE_ONCE:
        arn = object_arn(bucket, what)
        check(denying(st, "s3:PutObject", arn, base), f"{label}: bucket policy denies a put without If-None-Match on {what}")
        check(not denying(st, "s3:PutObject", arn, inm), f"{label}: bucket policy allows a put with If-None-Match on {what}")
    for what in REWRITTEN:
        arn = object_arn(bucket, what)
        check(not denying(st, "s3:PutObject", arn, base), f"{label}: bucket policy lets {what} be rewritten")
    arn = object_arn(bucket, "snapshots/<generation>.json")
    for what, ctx, denied in [
        ("no encryption header (bucket default)", inm, False),
        ("SSE-KMS with the bucket's key", {**inm, "s3:x-amz-server-side-encryption": "aws:kms",
                                           "s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn}, False),
        ("SSE-KMS naming no key (bucket's default key)", {**inm, "s3:x-amz-server-side-encryption": "aws:kms"}, False),
        ("SSE-KMS with another key", {**inm, "s3:x-amz-server-side-encryption": "aws:kms",
                                      "s3:x-amz-server-side-encryption-aws-kms-key-id": f"arn:aws:kms:{stack.region}:{ACCOUNT}:key/other"}, True),
        ("SSE-S3 (AES256)", {**inm, "s3:x-amz-server-side-encryption": "AES256"}, True),
        ("dual-layer SSE-KMS", {**inm, "s3:x-amz-server-side-encryption": "aws:kms:dsse"}, True),
        ("SSE-C", {**inm, "s3:x-amz-server-side-encryption-customer-algorithm": "AES256"}, True),
        ("plain HTTP", {**inm, "aws:SecureTransport": "false"}, True),
        ("TLS 1.1", {**inm, "s3:TlsVersion": "1.1"}, True),
    ]:
        check(bool(denying(st, "s3:PutObject", arn, ctx)) == denied,
              f"{label}: bucket policy {'denies' if denied else 'allows'} a put with {what}")
    # Reads and deletes are not touched by the write-once statements.
    for action in ("s3:GetObject", "s3:DeleteObject"):
        check(not denying(st, action, object_arn(bucket, "changes/"), base), f"{label}: bucket policy leaves {action} alone")


def check_encryption_and_keys(stack, label):
    topic = stack.props("NotifyTopic")
    kid = topic.get("KmsMasterKeyId")
    check(kid is not None and not str(kid).startswith("alias/aws/"), f"{label}: topic key is the stack's own (KmsMasterKeyId={kid})")
    for q in stack.of_type("AWS::SQS::Queue"):
        qk = stack.props(q).get("KmsMasterKeyId")
        check(qk is not None and not str(qk).startswith("alias/aws/"), f"{label}: queue {q} uses a key of the stack (KmsMasterKeyId={qk})")
        r = stack.resources[q]
        check(r.get("DeletionPolicy") == "Retain" and r.get("UpdateReplacePolicy") == "Retain",
              f"{label}: queue {q} is retained on delete and replace")
    check(kid == stack.physical("NotifyKey"), f"{label}: topic key is NotifyKey")
    for q in stack.of_type("AWS::SQS::Queue"):
        check(stack.props(q).get("KmsMasterKeyId") == stack.physical("NotifyKey"), f"{label}: queue {q} uses NotifyKey")
    kp = statements(stack.props("NotifyKey")["KeyPolicy"])
    cw = [s for s in kp if "cloudwatch.amazonaws.com" in as_list((s.get("Principal") or {}).get("Service", []))]
    check(len(cw) == 1, f"{label}: the notification key grants CloudWatch once")
    for s in cw:
        check(sorted(as_list(s["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey*"],
              f"{label}: CloudWatch may only GenerateDataKey*/Decrypt with the notification key ({s['Action']})")
        check(s.get("Condition", {}).get("StringEquals", {}).get("aws:SourceAccount") == ACCOUNT,
              f"{label}: CloudWatch's use of the key is limited to this account")
    sm_role = role_statements(stack, "RecoveryStateMachineRole")
    check(allows(sm_role, "kms:GenerateDataKey", stack.get_att("NotifyKey", "Arn")),
          f"{label}: the state machine may publish to the encrypted topic")


def check_functions(stack, label, facts):
    for f in stack.of_type("AWS::Lambda::Function"):
        p = stack.props(f)
        env = p.get("Environment", {}).get("Variables", {})
        check(env.get("STREAMSEAL_TARGET_REGION") == facts["target_region"],
              f"{label}: {f} STREAMSEAL_TARGET_REGION={facts['target_region']!r} (got {env.get('STREAMSEAL_TARGET_REGION')!r})")
        check(env.get("STREAMSEAL_TARGET") == f"s3://{facts['bucket']}/{PREFIX}", f"{label}: {f} STREAMSEAL_TARGET names the bucket")
        lc = stack.resources[f]["Properties"].get("LoggingConfig", {})
        group = lc.get("LogGroup", {})
        check(isinstance(group, dict) and group.get("Ref") in stack.of_type("AWS::Logs::LogGroup") and lc.get("LogFormat") == "JSON",
              f"{label}: {f} logs through LoggingConfig to a log group of the stack, as JSON")
    for m in stack.of_type("AWS::Lambda::EventSourceMapping"):
        p = stack.props(m)
        if "StartingPosition" not in p:
            continue
        age = int(p.get("MaximumRecordAgeInSeconds", -1))
        check(60 <= age < 86400, f"{label}: {m} discards (and reports) batches before the stream's 24-hour retention (MaximumRecordAgeInSeconds={age})")
        check(p.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination") == stack.get_att("OnFailureQueue", "Arn"),
              f"{label}: {m} reports discarded batches to the on-failure queue")
    for s in stack.of_type("AWS::Scheduler::Schedule"):
        check("Name" not in stack.resources[s]["Properties"], f"{label}: schedule {s} has no fixed Name")


def check_parameters(template):
    p = template["Parameters"]
    pat = p["SchemaLocation"]["AllowedPattern"]
    for value, ok in [("", True), ("s3://schemas", True), ("s3://schemas/prefix", True), ("s3://schemas/a/b", True),
                      ("s3://schemas/", False), ("s3://schemas/prefix/", False), ("s3://schemas//x", False)]:
        check((re.fullmatch(pat, value) is not None) == ok, f"SchemaLocation {value!r} is {'accepted' if ok else 'refused'}")
    pat = p["BackupBucketRegion"]["AllowedPattern"]
    for value, ok in [("", True), ("eu-central-1", True), ("us-gov-west-1", True), ("EU", False)]:
        check((re.fullmatch(pat, value) is not None) == ok, f"BackupBucketRegion {value!r} is {'accepted' if ok else 'refused'}")


class NoManagedPolicies:
    """samtranslator resolves managed policy names through IAM; the template names none."""

    def load(self):
        return {}


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    template, problems = decode(sys.argv[1])
    if problems or template is None:
        for p in problems or []:
            print(p)
        return 1
    template = json.loads(json.dumps(template, default=str))
    guarded("parameters", check_parameters, template)
    notes = []
    for label, region, params, facts in COMBINATIONS:
        t = copy.deepcopy(template)
        t.setdefault("Globals", {}).setdefault("Function", {})["CodeUri"] = "s3://artifacts/streamseal-lambda.zip"
        os.environ["AWS_DEFAULT_REGION"] = region
        try:
            out = transform(t, dict(params), NoManagedPolicies())
        except Exception as e:  # noqa: BLE001 - every translation error is a failed check
            check(False, f"{label}: samtranslator translates the template: {e}")
            continue
        stack = Stack(out, region, params, facts["bucket"])
        guarded(label, check_roles, stack, label)
        guarded(label, check_s3_grants, stack, label, facts)
        guarded(label, check_bucket_policy, stack, label, facts)
        guarded(label, check_encryption_and_keys, stack, label)
        guarded(label, check_functions, stack, label, facts)
        definition = guarded(label, check_state_machine, stack, label)
        if definition is not None and label == COMBINATIONS[0][0]:
            notes.append(asl_validate(definition, label))
    if failures:
        for f in failures:
            print(f"FAIL {f}")
        print(f"{len(failures)} of {len(failures) + len(passes)} checks failed")
        return 1
    import samtranslator

    print(f"{len(passes)} checks passed over {len(COMBINATIONS)} parameter combinations "
          f"(samtranslator {samtranslator.__version__}); " + "; ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
