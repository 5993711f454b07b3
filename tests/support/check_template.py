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
- no EventBridge Scheduler schedule has a fixed Name; the checkpoint schedule invokes the seal
  function with {"action": "checkpoint", "table"}, is enabled exactly when CheckpointSchedule
  is neither empty nor "none", and its role may only invoke that function;
- retention: STREAMSEAL_KEEP_CHANGES_DAYS is set on the seal function exactly when
  KeepChangesDays > 0, and only then may the seal role delete change segments (expire);
  checkpoint-files/, checkpoint-manifests/ and expired/ are written by the seal role only, and
  are write-once in the bucket policy;
- the state machine definitions, with their DefinitionSubstitutions applied: every Task has
  Retry, Catch and TimeoutSeconds (Lambda tasks longer than the function's timeout), no state
  keeps a whole Lambda reply ($.Payload or $), verify is quick (deep: false), and the routing
  Choice states send each documented input where the outputs' text says (evaluated here with
  Step Functions' rule that comparing a missing field is a runtime error);
- the distributed restore (LargeRestoreStateMachine): plan, a DISTRIBUTED Map over
  $.plan.iterations whose concurrency is RestorePartitionConcurrency, one retried
  restore-partition per iteration, the check looped while incomplete, failures notified then
  failed, inputs outside RestoreTablePrefix refused before anything runs; its role starts and
  watches only its own child executions;
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
    ("LargeRestoreStateMachineRole", "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"),
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
            "KeepChangesDays": "35",
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
            "CheckpointSchedule": "cron(0 3 * * ? *)",
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
            "CheckpointSchedule": "none",
            "KeepChangesDays": "400",
        },
        {"bucket": "acme-orders-backup", "target_region": ""},
    ),
    (
        "recovery side (no stream), bucket created here",
        "eu-central-1",
        {"TableName": TABLE, "RestoreOnOutage": "true"},
        {"bucket": "created-backup-bucket", "target_region": "eu-central-1"},
    ),
    (
        "recovery side, checkpoints unscheduled, changes kept 90 days",
        "eu-central-1",
        {"TableName": TABLE, "CheckpointSchedule": "", "KeepChangesDays": "90",
         "RecoveryRegion": "eu-west-1", "RestorePartitionConcurrency": "4"},
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
    """The role's inline policies, and the AWS::IAM::Policy resources attached to it."""
    p = stack.props(role)
    out = []
    for pol in p.get("Policies", []):
        out += statements(pol["PolicyDocument"])
    for name in stack.of_type("AWS::IAM::Policy"):
        attached = stack.props(name)
        if stack.physical(role) in attached.get("Roles", []):
            out += statements(attached["PolicyDocument"])
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
    "checkpoint-files/": "checkpoint-files/0000000001/part-00000.parquet",
    "checkpoint-manifests/": "checkpoint-manifests/0000000001.json",
    "expired/": "expired/0000000001-0123456789abcdef.json",
}
REWRITTEN = {
    "snapshots/head.json": "snapshots/head.json",
    "shards/": "shards/2026-01-01T00:00:00.000.json",
    "checkpoints/": "checkpoints/shardId-00000001767225600000-0123abcd.json",
    "restores/": "restores/0123456789abcdef.json",
    "restores/ (distributed plan)": "restores/0123456789abcdef-plan.json",
    "athena/ (snapshot list)": "athena/snapshot-files/generation=0000000001/symlink.txt",
    "athena/ (base list)": "athena/base-files/symlink.txt",
    "compaction/": "compaction/cleaned.json",
}
INGEST_WRITES = ["changes/", "inbox/", "quarantine/", "shards/"]
INGEST_NEVER = ["snapshots/<generation>.json", "snapshots/head.json", "snapshot-files/", "restores/",
                "restores/ (distributed plan)", "findings/", "athena/ (snapshot list)", "base/",
                "checkpoints/", "reports/", "locks/", "compaction/", "checkpoint-files/",
                "checkpoint-manifests/", "expired/"]
SEAL_WRITES = ["snapshots/<generation>.json", "snapshots/head.json", "snapshot-files/", "findings/",
               "athena/ (snapshot list)", "athena/ (base list)", "restores/", "restores/ (distributed plan)",
               "reports/", "locks/", "checkpoint-files/", "checkpoint-manifests/", "expired/"]
SEAL_NEVER = ["changes/", "changes/ (compacted)", "inbox/", "quarantine/", "shards/", "base/", "checkpoints/",
              "compaction/"]
SEAL_DELETES = ["inbox/", "restores/", "restores/ (distributed plan)", "locks/"]
# Expire deletes change segments (compacted ones too), and only with KeepChangesDays > 0.
EXPIRE_DELETES = ["changes/", "changes/ (compacted)"]
ALL_KEYS = {**WRITE_ONCE, **REWRITTEN}


def object_arn(bucket, what, table=TABLE):
    return f"arn:aws:s3:::{bucket}/{PREFIX}/{table}/{ALL_KEYS[what]}"


def keep_changes_days(stack):
    return int(stack.params["KeepChangesDays"])


def checkpoints_scheduled(stack):
    return stack.params["CheckpointSchedule"] not in ("", "none")


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
    m = re.fullmatch(r"States\.StringToJson\('(.*)'\)", e, re.S)
    if m:
        return json.loads(m.group(1))
    raise Runtime(f"intrinsic {e} is not modelled here")


def string_matches(pattern, value):
    """ASL StringMatches: * is any run of characters; \\ escapes the next character."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out += re.escape(pattern[i + 1])
            i += 2
            continue
        out += ".*" if c == "*" else re.escape(c)
        i += 1
    return re.fullmatch(out, value, re.S) is not None


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
    if "StringMatches" in rule:
        return isinstance(value, str) and string_matches(rule["StringMatches"], value)
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


def definition_of(stack, machine="RecoveryStateMachine"):
    sm = stack.props(machine)
    text = sm["DefinitionString"]
    subs = sm.get("DefinitionSubstitutions", {})
    for k, v in subs.items():
        text = text.replace("${" + k + "}", str(v))
    left = re.findall(r"\$\{[A-Za-z0-9_]+\}", text)
    check(not left, f"every ${{...}} of the definition is substituted (left: {left})")
    return json.loads(text)


def check_tasks(stack, d, label):
    """What every Task of a definition must have: Retry, Catch, a timeout beyond its
    function's, and only selected fields of a Lambda reply."""
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
    return states


def check_state_machine(stack, label):
    d = definition_of(stack)
    check_tasks(stack, d, label)

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
            schedules_of(stack, stack.physical("RecoveryStateMachine"))[0])["Target"]["Input"]),
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


# Fields of a restore-partition answer that restore-check reads (src/aws/distributed.rs,
# PartitionOutcome).
PARTITION_OUTCOME = {"partition", "partitions", "items", "digest", "quarantined_keys", "quarantined_digest", "skipped"}


def lambda_action(s):
    payload = (s.get("Parameters") or {}).get("Payload")
    return payload.get("action") if isinstance(payload, dict) else None


def check_large_restore(stack, label):
    """The distributed restore: shape, routing of its inputs, and its role."""
    d = definition_of(stack, "LargeRestoreStateMachine")
    check_tasks(stack, d, label + " (large restore)")
    states = d["States"]
    by_action = {lambda_action(s): n for n, s in states.items() if s["Type"] == "Task" and lambda_action(s)}
    check(set(by_action) == {"restore-plan", "restore-check"},
          f"{label}: the large restore invokes restore-plan and restore-check at the top level (has {sorted(by_action)})")
    plan_name, check_name = by_action.get("restore-plan"), by_action.get("restore-check")
    maps = [n for n, s in states.items() if s["Type"] == "Map"]
    check(len(maps) == 1, f"{label}: the large restore has one Map state (has {maps})")
    if not (plan_name and check_name and len(maps) == 1):
        return d
    plan, check_state, m = states[plan_name], states[check_name], states[maps[0]]

    # Plan -> Map -> Check, the Map over the plan's iterations, in distributed mode.
    check(plan.get("ResultPath") == "$.plan" and "iterations.$" in plan.get("ResultSelector", {}),
          f"{label}: {plan_name} keeps the plan, with its iterations, at $.plan")
    check(plan.get("Next") == maps[0], f"{label}: {plan_name} goes on to the Map ({plan.get('Next')})")
    check(m.get("Next") == check_name, f"{label}: the Map goes on to {check_name} ({m.get('Next')})")
    proc = m.get("ItemProcessor", {})
    check(proc.get("ProcessorConfig") == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
          f"{label}: the Map is DISTRIBUTED, STANDARD child executions ({proc.get('ProcessorConfig')})")
    check(m.get("ItemsPath") == "$.plan.iterations", f"{label}: the Map iterates $.plan.iterations ({m.get('ItemsPath')})")
    check(m.get("ResultPath") == "$.results", f"{label}: the Map's results go to $.results ({m.get('ResultPath')})")
    check("MaxConcurrency" in m or "MaxConcurrencyPath" in m, f"{label}: the Map's concurrency is bounded")
    check(bool(m.get("Catch")), f"{label}: the Map has Catch")
    inner = proc.get("States", {})
    inner_tasks = [(n, s) for n, s in inner.items() if s["Type"] == "Task"]
    check(len(inner_tasks) == 1, f"{label}: each iteration is one Task ({[n for n, _ in inner_tasks]})")
    for n, s in inner_tasks:
        check(s["Parameters"].get("Payload.$") == "$",
              f"{label}: iteration {n} sends the plan's iteration (restore-partition) as it is")
        check(set(s.get("ResultSelector", {})) == {f + ".$" for f in PARTITION_OUTCOME},
              f"{label}: iteration {n} answers exactly a partition's outcome ({sorted(s.get('ResultSelector', {}))})")
        check(s.get("ResultPath", "$") == "$" and s.get("End") is True, f"{label}: iteration {n} ends with its outcome")
        task_failed = [r for r in s.get("Retry", []) if "States.TaskFailed" in r["ErrorEquals"] or "States.ALL" in r["ErrorEquals"]]
        check(task_failed and task_failed[0].get("MaxAttempts", 3) >= 2,
              f"{label}: iteration {n} retries a failed partition, which resumes")
        throttled = [r for r in s.get("Retry", []) if "Lambda.TooManyRequestsException" in r["ErrorEquals"]]
        check(bool(throttled), f"{label}: iteration {n} retries throttled invocations")
        for c in s.get("Catch", []):
            check(inner.get(c["Next"], {}).get("Type") == "Fail", f"{label}: iteration {n} fails its child execution when caught")

    # Check: every partition's result, looped while incomplete; a mismatch is no success.
    payload = check_state["Parameters"]["Payload"]
    check(payload.get("results.$") == "$.results", f"{label}: {check_name} gets every partition's result ($.results)")
    for k in ("table", "snapshot", "target_table"):
        check(payload.get(k + ".$") == f"$.plan.{k}", f"{label}: {check_name} checks the planned {k}")
    rp = check_state.get("ResultPath")
    nxt = states.get(check_state.get("Next"), {})
    loop = [c for c in nxt.get("Choices", [])
            if c.get("Variable") == f"{rp}.complete" and c.get("BooleanEquals") is False]
    check(nxt.get("Type") == "Choice" and len(loop) == 1 and loop[0]["Next"] == check_name,
          f"{label}: {check_name} is called again while {rp}.complete is false")
    after = states.get(nxt.get("Default"), {})
    check(after.get("Type") == "Choice" and any(c.get("Variable") == f"{rp}.matches" for c in after.get("Choices", [])),
          f"{label}: a complete check succeeds only when it matches")
    for c in after.get("Choices", []):
        if c.get("Variable") == f"{rp}.matches":
            ok_next = c["Next"] if c.get("BooleanEquals") is True else after.get("Default")
            seen = set()
            while ok_next and states[ok_next]["Type"] in ("Pass", "Task") and ok_next not in seen:
                seen.add(ok_next)
                ok_next = states[ok_next].get("Next")
            check(ok_next and states[ok_next]["Type"] == "Succeed", f"{label}: a matching table ends in Succeed ({ok_next})")

    # Every catch notifies, then fails.
    for n, s in states.items():
        for c in s.get("Catch", []):
            cur, seen = c["Next"], []
            while states[cur]["Type"] == "Pass" and cur not in seen:
                seen.append(cur)
                cur = states[cur]["Next"]
            target = states[cur]
            if s.get("Resource") == "arn:aws:states:::sns:publish":
                check(target["Type"] == "Fail", f"{label}: {n} (a notification) fails the execution when it fails")
                continue
            check(target.get("Resource") == "arn:aws:states:::sns:publish" and states[target["Next"]]["Type"] == "Fail",
                  f"{label}: a failure of {n} is notified ({cur}), then the execution fails")

    # Inputs: defaults, the RestoreTablePrefix guard.
    prefix = stack.params["RestoreTablePrefix"]
    region = stack.params["RecoveryRegion"] or stack.region
    concurrency = int(stack.params["RestorePartitionConcurrency"])
    target = f"{prefix}{TABLE}-big"
    cases = [
        ("table and target only", {"table": TABLE, "target_table": target},
         {"action": "restore-plan", "table": TABLE, "snapshot": "latest", "target_table": target,
          "region": region, "partitions": None}),
        ("every field", {"table": TABLE, "target_table": target, "snapshot": "0000000007",
                         "region": "us-west-2", "partitions": 8},
         {"action": "restore-plan", "table": TABLE, "snapshot": "0000000007", "target_table": target,
          "region": "us-west-2", "partitions": 8}),
        ("a target outside RestoreTablePrefix", {"table": TABLE, "target_table": f"{TABLE}-copy"}, None),
        ("the prefix not at the start", {"table": TABLE, "target_table": f"x{prefix}{TABLE}"}, None),
        ("the source table as target", {"table": TABLE, "target_table": TABLE}, None),
        ("no target_table", {"table": TABLE}, None),
        ("no table", {"target_table": target}, None),
    ]
    for what, given, want in cases:
        try:
            name, data = route(d, given)
        except Runtime as e:
            check(False, f"{label}: large restore input with {what} routes without a runtime error ({e})")
            continue
        if want is None:
            check(states[name]["Type"] == "Fail", f"{label}: large restore input with {what} fails before any task (reached {name})")
            continue
        check(name == plan_name, f"{label}: large restore input with {what} reaches {plan_name} (reached {name})")
        if name != plan_name:
            continue
        sent = parameters(plan["Parameters"]["Payload"], data)
        check(sent == want, f"{label}: large restore input with {what} plans {want} (got {sent})")
        got = path_get(data, m["MaxConcurrencyPath"]) if "MaxConcurrencyPath" in m else m.get("MaxConcurrency")
        check(isinstance(got, int) and not isinstance(got, bool) and got == concurrency,
              f"{label}: the Map runs RestorePartitionConcurrency={concurrency} partitions at once, as a number (got {got!r})")

    # The role: the function, the topic, and only its own child executions.
    st = role_statements(stack, "LargeRestoreStateMachineRole")
    arn = stack.physical("LargeRestoreStateMachine")
    name = stack.get_att("LargeRestoreStateMachine", "Name")
    execution = f"arn:aws:states:{stack.region}:{ACCOUNT}:execution:{name}"
    check(allows(st, "lambda:InvokeFunction", stack.get_att("SealFunction", "Arn")), f"{label}: the large restore may invoke the seal function")
    if "IngestFunction" in stack.resources:
        check(not allows(st, "lambda:InvokeFunction", stack.get_att("IngestFunction", "Arn")),
              f"{label}: the large restore may not invoke the ingest function")
    check(allows(st, "sns:Publish", stack.physical("NotifyTopic")), f"{label}: the large restore may notify")
    check(allows(st, "states:StartExecution", arn), f"{label}: the large restore may start its own child executions")
    for a in ("states:DescribeExecution", "states:StopExecution"):
        check(allows(st, a, f"{execution}/Partitions:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
              f"{label}: the large restore may {a} its child executions")
    check(not allows(st, "states:StartExecution", stack.physical("RecoveryStateMachine")),
          f"{label}: the large restore may not start the recovery state machine")
    check(not allows(st, "states:StartExecution", f"arn:aws:states:{stack.region}:{ACCOUNT}:stateMachine:other"),
          f"{label}: the large restore may not start other state machines")
    check(not allows(st, "states:StopExecution", f"arn:aws:states:{stack.region}:{ACCOUNT}:execution:RecoveryStateMachine:x"),
          f"{label}: the large restore may not stop recovery executions")
    check(not allows(st, "dynamodb:DeleteTable", f"arn:aws:dynamodb:{stack.region}:{ACCOUNT}:table/{prefix}x"),
          f"{label}: the large restore deletes no table")
    check(allows(st, "kms:GenerateDataKey", stack.get_att("NotifyKey", "Arn")),
          f"{label}: the large restore may publish to the encrypted topic")
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
    keep = keep_changes_days(stack)
    deletes = SEAL_DELETES + (EXPIRE_DELETES if keep > 0 else [])
    for what in ALL_KEYS:
        check(allows(st, "s3:DeleteObject", object_arn(bucket, what)) == (what in deletes),
              f"{label}: seal role {'can' if what in deletes else 'cannot'} delete {what} (KeepChangesDays={keep})")
        check(allows(st, "s3:GetObject", object_arn(bucket, what)), f"{label}: seal role can read {what}")
    for what in EXPIRE_DELETES:
        check(allows(st, "s3:DeleteObject", object_arn(bucket, what)) == (keep > 0),
              f"{label}: seal role may delete {what} exactly when KeepChangesDays > 0 (it is {keep})")
        check(not allows(st, "s3:DeleteObject", object_arn(bucket, what, table="other-table")),
              f"{label}: seal role cannot delete another table's {what}")
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
    keep = keep_changes_days(stack)
    env = stack.props("SealFunction").get("Environment", {}).get("Variables", {})
    if keep > 0:
        check(env.get("STREAMSEAL_KEEP_CHANGES_DAYS") == str(keep),
              f"{label}: SealFunction STREAMSEAL_KEEP_CHANGES_DAYS={keep} (got {env.get('STREAMSEAL_KEEP_CHANGES_DAYS')!r})")
    else:
        check("STREAMSEAL_KEEP_CHANGES_DAYS" not in env,
              f"{label}: SealFunction has no STREAMSEAL_KEEP_CHANGES_DAYS with KeepChangesDays=0 (changes kept for ever)")
    if "IngestFunction" in stack.resources:
        ingest_env = stack.props("IngestFunction").get("Environment", {}).get("Variables", {})
        check("STREAMSEAL_KEEP_CHANGES_DAYS" not in ingest_env, f"{label}: IngestFunction has no STREAMSEAL_KEEP_CHANGES_DAYS")
    check(stack.condition("ExpireChanges") == (keep > 0), f"{label}: condition ExpireChanges is KeepChangesDays > 0")
    check(stack.condition("CheckpointsScheduled") == checkpoints_scheduled(stack),
          f"{label}: condition CheckpointsScheduled is CheckpointSchedule not empty nor none ({stack.params['CheckpointSchedule']!r})")


def schedules_of(stack, target_arn):
    return [s for s in stack.of_type("AWS::Scheduler::Schedule")
            if stack.props(s)["Target"]["Arn"] == target_arn]


def check_checkpoint_schedule(stack, label):
    seal = stack.get_att("SealFunction", "Arn")
    found = schedules_of(stack, seal)
    check(len(found) == 1, f"{label}: one schedule invokes the seal function (found {found})")
    for name in found:
        p = stack.props(name)
        target = p["Target"]
        check(json.loads(target["Input"]) == {"action": "checkpoint", "table": TABLE},
              f"{label}: schedule {name} input is {{\"action\": \"checkpoint\", \"table\": {TABLE!r}}} (got {target['Input']})")
        on = checkpoints_scheduled(stack)
        check(p["State"] == ("ENABLED" if on else "DISABLED"),
              f"{label}: schedule {name} is {'enabled' if on else 'disabled'} with CheckpointSchedule={stack.params['CheckpointSchedule']!r} (State {p['State']})")
        expr = p["ScheduleExpression"]
        check(re.fullmatch(r"(rate|cron|at)\(.+\)", expr) is not None, f"{label}: schedule {name} has a valid expression ({expr!r})")
        if on:
            check(expr == stack.params["CheckpointSchedule"], f"{label}: schedule {name} runs on CheckpointSchedule ({expr!r})")
        att = stack.resources[name]["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"]
        role = att[0] if isinstance(att, list) else att.split(".")[0]
        st = role_statements(stack, role)
        check(allows(st, "lambda:InvokeFunction", seal), f"{label}: schedule role {role} may invoke the seal function")
        if "IngestFunction" in stack.resources:
            check(not allows(st, "lambda:InvokeFunction", stack.get_att("IngestFunction", "Arn")),
                  f"{label}: schedule role {role} may not invoke the ingest function")
        acts = {a.lower() for x in st if x["Effect"] == "Allow" for a in as_list(x["Action"])}
        check(acts == {"lambda:invokefunction"}, f"{label}: schedule role {role} may only invoke (has {sorted(acts)})")
        check(not stack.props(role).get("ManagedPolicyArns"), f"{label}: schedule role {role} carries no managed policy")


def check_parameters(template):
    p = template["Parameters"]
    pat = p["SchemaLocation"]["AllowedPattern"]
    for value, ok in [("", True), ("s3://schemas", True), ("s3://schemas/prefix", True), ("s3://schemas/a/b", True),
                      ("s3://schemas/", False), ("s3://schemas/prefix/", False), ("s3://schemas//x", False)]:
        check((re.fullmatch(pat, value) is not None) == ok, f"SchemaLocation {value!r} is {'accepted' if ok else 'refused'}")
    pat = p["BackupBucketRegion"]["AllowedPattern"]
    for value, ok in [("", True), ("eu-central-1", True), ("us-gov-west-1", True), ("EU", False)]:
        check((re.fullmatch(pat, value) is not None) == ok, f"BackupBucketRegion {value!r} is {'accepted' if ok else 'refused'}")
    pat = p["CheckpointSchedule"]["AllowedPattern"]
    for value, ok in [("", True), ("none", True), ("rate(1 day)", True), ("rate(6 hours)", True),
                      ("cron(0 3 * * ? *)", True), ("daily", False), ("rate(1 day) ", False), ("nonesuch", False)]:
        check((re.fullmatch(pat, value) is not None) == ok, f"CheckpointSchedule {value!r} is {'accepted' if ok else 'refused'}")
    check(re.fullmatch(pat, str(p["CheckpointSchedule"]["Default"])) is not None
          and p["CheckpointSchedule"]["Default"] not in ("", "none"),
          f"CheckpointSchedule defaults to a schedule ({p['CheckpointSchedule']['Default']!r})")
    k = p["KeepChangesDays"]
    # The function accepts 1..36500 (src/lambda/config.rs); 0 leaves the variable unset.
    check(k["Type"] == "Number" and str(k["Default"]) == "0" and int(k["MinValue"]) == 0 and int(k["MaxValue"]) <= 36500,
          f"KeepChangesDays is a Number from 0 to at most 36500, 0 by default ({k})")
    c = p["RestorePartitionConcurrency"]
    check(c["Type"] == "Number" and int(c["MinValue"]) >= 1 and int(c["Default"]) >= 1,
          f"RestorePartitionConcurrency is a positive Number ({c})")
    groups = [x for g in template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"] for x in g["Parameters"]]
    for name in p:
        check(groups.count(name) == 1, f"parameter {name} is in exactly one ParameterGroup")


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
        guarded(label, check_checkpoint_schedule, stack, label)
        definition = guarded(label, check_state_machine, stack, label)
        if definition is not None and label == COMBINATIONS[0][0]:
            notes.append(asl_validate(definition, label))
        large = guarded(label, check_large_restore, stack, label)
        if large is not None and label == COMBINATIONS[0][0]:
            notes.append(asl_validate(large, label + " (large restore)").replace("the definition", "the large restore definition"))
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
