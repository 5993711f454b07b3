//! The deployment template (`deploy/template.yaml`) against the code it deploys.
//!
//! - `cfn-lint` and `checkov` (pinned in tests/requirements.txt) pass, and every checkov skip
//!   carries a justification.
//! - The state machine definition is well formed: every transition names a state of its own
//!   scope, every state is reachable, every task's resource is a function, topic or SDK call
//!   the template defines and lets the state machine's role use.
//! - Every event shape the template wires to the function is one the handler accepts, fed to
//!   it for real: the DynamoDB stream (records read from the emulator's stream, as the event
//!   source mapping does), the on-failure queue's messages, and the EventBridge events and
//!   schedule input, which run the state machine definition itself (a small interpreter of
//!   the ASL subset the template uses) against the emulator: seal, deep verify, restore into a
//!   new table that equals the source, notify; and the drill, which deletes its scratch table.
//!   The checkpoint schedule's input, then the distributed restore state machine: plan from
//!   the checkpoint, one partition per Map iteration, the check; the table equals the source.
//! - The functions' environment, as the template sets it, is a configuration the handler
//!   accepts.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use streamseal::aws::tail::{SdkStreams, StreamApi, lambda_event};
use streamseal::lambda::{Config, Handler, Outcome};
use streamseal::store::ObjectStore;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

// ------------------------------------------------------------------ the template as JSON

fn template() -> &'static Value {
    static T: OnceLock<Value> = OnceLock::new();
    T.get_or_init(|| {
        let out = Command::new(common::python())
            .arg(common::root().join("tests/support/template_json.py"))
            .arg(common::root().join("deploy/template.yaml"))
            .output()
            .expect("running tests/support/template_json.py");
        assert!(
            out.status.success(),
            "decoding the template: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    })
}

fn tool(name: &str) -> std::path::PathBuf {
    let p = common::python().parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} not found: run the suite with scripts/test",
        p.display()
    );
    p
}

#[test]
fn cfn_lint_and_checkov_pass_and_every_skip_is_justified() {
    let t = common::root().join("deploy/template.yaml");
    // With the informational checks too (the template's path first: `--include-checks`
    // takes several values).
    let lint = Command::new(tool("cfn-lint"))
        .arg(&t)
        .args(["--include-checks", "I"])
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // --skip-download: no calls to the vendor's API (this machine has no internet).
    let checkov = Command::new(tool("checkov"))
        .args([
            "--framework",
            "cloudformation",
            "--skip-download",
            "--quiet",
            "--compact",
            "-f",
        ])
        .arg(&t)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&checkov.stdout);
    assert!(
        checkov.status.success() && report.contains("Failed checks: 0"),
        "checkov:\n{report}{}",
        String::from_utf8_lossy(&checkov.stderr)
    );
    let mut skips = 0;
    for (name, r) in template()["Resources"].as_object().unwrap() {
        for skip in r["Metadata"]["checkov"]["skip"]
            .as_array()
            .into_iter()
            .flatten()
        {
            skips += 1;
            let comment = skip["comment"].as_str().unwrap_or("");
            assert!(
                comment.split_whitespace().count() >= 6,
                "{name}: checkov skip {} needs a real justification, has {comment:?}",
                skip["id"]
            );
        }
    }
    assert!(skips > 0);
}

/// Runs a checking tool: whether it succeeded, and its stdout and stderr.
fn run_tool(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `sam validate --lint` (the SAM CLI pinned in tests/requirements-sam.txt, installed into
/// .venv-sam by scripts/test; offline, telemetry off).
#[test]
fn sam_validate_lint_passes() {
    let sam = common::root().join(".venv-sam/bin/sam");
    assert!(
        sam.exists(),
        "{} not found: run the suite with scripts/test",
        sam.display()
    );
    let (success, text) = run_tool(
        Command::new(sam)
            .args(["validate", "--lint", "--region", "us-east-1", "--template"])
            .arg(common::root().join("deploy/template.yaml"))
            .env("SAM_CLI_TELEMETRY", "0"),
    );
    assert!(
        success && text.contains("is a valid SAM Template"),
        "sam validate --lint:\n{text}"
    );
}

/// The template as CloudFormation will see it: translated by `samtranslator` (pinned) for
/// several parameter sets, then checked by tests/support/check_template.py. IAM (no managed
/// policy with `Resource: "*"` on the functions; the ingest role cannot write snapshots,
/// file lists, restores or the head), the bucket policy (puts without `If-None-Match` denied
/// on every write-once prefix, allowed on the rewritten ones; only the stack's key), the
/// topic's key (not `alias/aws/sns`), no fixed schedule name, and the state machine: every
/// Task has Retry, Catch and TimeoutSeconds, no state passes a whole Lambda reply, and
/// `asl-validator` (npm, when scripts/test could install it) accepts the definition.
#[test]
fn the_translated_template_passes_its_security_and_workflow_checks() {
    let (success, text) = run_tool(
        Command::new(common::python())
            .arg(common::root().join("tests/support/check_template.py"))
            .arg(common::root().join("deploy/template.yaml")),
    );
    assert!(success, "check_template.py:\n{text}");
    assert!(text.contains("checks passed"), "{text}");
}

/// Every alarm on the function's own metrics (namespace `streamseal`, from its Embedded Metric
/// Format lines) names a metric the function prints, with the `Table` dimension it prints.
#[test]
fn alarms_on_the_functions_metrics_name_metrics_they_print() {
    let source = std::fs::read_to_string(common::root().join("src/lambda/metrics.rs")).unwrap();
    let mut alarms = 0;
    for (name, r) in template()["Resources"].as_object().unwrap() {
        let p = &r["Properties"];
        if r["Type"] != "AWS::CloudWatch::Alarm" || p["Namespace"] != "streamseal" {
            continue;
        }
        alarms += 1;
        let metric = p["MetricName"].as_str().unwrap();
        let printed = source.contains(&format!("\"{metric}\""))
            || (metric.starts_with("Findings") && source.contains("kind.metric()"));
        assert!(
            printed,
            "{name}: metric {metric} is not printed by the function"
        );
        assert_eq!(p["Dimensions"][0]["Name"], "Table", "{name}");
    }
    assert!(alarms >= 1);
}

// ------------------------------------------------------------------ CloudFormation values

/// Evaluates the intrinsic functions the template uses, with parameter values and made-up
/// physical ids, the way CloudFormation would for one stack.
struct Stack {
    t: &'static Value,
    params: HashMap<String, Value>,
    bucket: String,
}

impl Stack {
    fn new(overrides: &[(&str, Value)], bucket: &str) -> Stack {
        let t = template();
        let mut params = HashMap::new();
        for (name, p) in t["Parameters"].as_object().unwrap() {
            let v = match &p["Default"] {
                Value::Null => Value::Null,
                Value::String(s) if p["Type"] == "CommaDelimitedList" => {
                    Value::Array(s.split(',').map(|x| json!(x.trim())).collect())
                }
                Value::Number(n) => json!(n.to_string()),
                other => other.clone(),
            };
            params.insert(name.clone(), v);
        }
        for (k, v) in overrides {
            assert!(params.contains_key(*k), "no parameter {k}");
            params.insert((*k).to_owned(), v.clone());
        }
        Stack {
            t,
            params,
            bucket: bucket.to_owned(),
        }
    }

    fn resource(&self, name: &str) -> &Value {
        &self.t["Resources"][name]
    }

    fn physical(&self, name: &str) -> Value {
        match name {
            "AWS::Region" => return json!(REGION),
            "AWS::AccountId" => return json!(ACCOUNT),
            "AWS::Partition" => return json!("aws"),
            "AWS::StackName" => return json!("streamseal-test"),
            "AWS::NoValue" => return Value::Null,
            _ => {}
        }
        if let Some(v) = self.params.get(name) {
            return v.clone();
        }
        let r = self.resource(name);
        assert!(r.is_object(), "Ref to unknown {name}");
        match r["Type"].as_str().unwrap() {
            "AWS::S3::Bucket" => json!(self.bucket),
            "AWS::SNS::Topic" => json!(format!("arn:aws:sns:{REGION}:{ACCOUNT}:{name}")),
            "AWS::Serverless::StateMachine" => {
                json!(format!(
                    "arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
                ))
            }
            _ => json!(name),
        }
    }

    fn get_att(&self, name: &str, attr: &str) -> Value {
        let r = self.resource(name);
        assert!(r.is_object(), "GetAtt of unknown {name}");
        let ty = r["Type"].as_str().unwrap();
        json!(match (ty, attr) {
            ("AWS::Serverless::Function", "Arn") => {
                format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
            }
            ("AWS::SQS::Queue", "Arn") => format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
            ("AWS::SQS::Queue", "QueueName") => name.to_owned(),
            ("AWS::KMS::Key", "Arn") => format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{name}"),
            ("AWS::S3::Bucket", "Arn") => format!("arn:aws:s3:::{}", self.bucket),
            ("AWS::SNS::Topic", "TopicName") => name.to_owned(),
            ("AWS::Logs::LogGroup", "Arn") => {
                format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}")
            }
            _ => panic!("GetAtt {name}.{attr} ({ty}) is not modelled"),
        })
    }

    fn condition(&self, name: &str) -> bool {
        let c = &self.t["Conditions"][name];
        assert!(!c.is_null(), "unknown condition {name}");
        self.eval(c).as_bool().unwrap()
    }

    fn eval(&self, v: &Value) -> Value {
        match v {
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.eval(x))
                    .filter(|x| !x.is_null())
                    .collect(),
            ),
            Value::Object(o) if o.len() == 1 => {
                let (k, arg) = o.iter().next().unwrap();
                match k.as_str() {
                    "Ref" => self.physical(arg.as_str().unwrap()),
                    "Fn::GetAtt" => {
                        let (n, a) = match arg {
                            Value::Array(p) => (
                                p[0].as_str().unwrap().to_owned(),
                                p[1].as_str().unwrap().to_owned(),
                            ),
                            Value::String(s) => {
                                let (n, a) = s.split_once('.').unwrap();
                                (n.to_owned(), a.to_owned())
                            }
                            _ => panic!("GetAtt {arg}"),
                        };
                        self.get_att(&n, &a)
                    }
                    "Fn::Sub" => {
                        let (text, vars) = match arg {
                            Value::String(s) => (s.clone(), serde_json::Map::new()),
                            Value::Array(p) => (
                                p[0].as_str().unwrap().to_owned(),
                                p[1].as_object().unwrap().clone(),
                            ),
                            _ => panic!("Sub {arg}"),
                        };
                        json!(self.sub(&text, &vars))
                    }
                    "Fn::If" => {
                        let a = arg.as_array().unwrap();
                        if self.condition(a[0].as_str().unwrap()) {
                            self.eval(&a[1])
                        } else {
                            self.eval(&a[2])
                        }
                    }
                    "Fn::Equals" => {
                        let a = arg.as_array().unwrap();
                        let s = |x: Value| match x {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        json!(s(self.eval(&a[0])) == s(self.eval(&a[1])))
                    }
                    "Fn::Not" => json!(!self.eval(&arg[0]).as_bool().unwrap()),
                    "Fn::And" => json!(
                        arg.as_array()
                            .unwrap()
                            .iter()
                            .all(|c| self.eval(c).as_bool().unwrap())
                    ),
                    "Fn::Or" => json!(
                        arg.as_array()
                            .unwrap()
                            .iter()
                            .any(|c| self.eval(c).as_bool().unwrap())
                    ),
                    "Condition" => json!(self.condition(arg.as_str().unwrap())),
                    "Fn::Join" => {
                        let sep = arg[0].as_str().unwrap();
                        let parts = self.eval(&arg[1]);
                        json!(
                            parts
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|p| p.as_str().unwrap().to_owned())
                                .collect::<Vec<_>>()
                                .join(sep)
                        )
                    }
                    "Fn::Split" => {
                        let sep = arg[0].as_str().unwrap();
                        let s = self.eval(&arg[1]);
                        Value::Array(s.as_str().unwrap().split(sep).map(|p| json!(p)).collect())
                    }
                    "Fn::Select" => {
                        let i: usize = match self.eval(&arg[0]) {
                            Value::String(s) => s.parse().unwrap(),
                            n => n.as_u64().unwrap() as usize,
                        };
                        self.eval(&arg[1])[i].clone()
                    }
                    _ => Value::Object(o.iter().map(|(k, v)| (k.clone(), self.eval(v))).collect()),
                }
            }
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), self.eval(v)))
                    .filter(|(_, v)| !v.is_null())
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn sub(&self, text: &str, vars: &serde_json::Map<String, Value>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let end = rest[i..].find('}').unwrap() + i;
            let name = &rest[i + 2..end];
            let v = match vars.get(name) {
                Some(v) => self.eval(v),
                None => match name.split_once('.') {
                    Some((n, a)) => self.get_att(n, a),
                    None => self.physical(name),
                },
            };
            out.push_str(v.as_str().unwrap_or(&v.to_string()));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A function's environment: Globals, then its own variables.
    fn environment(&self, function: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for vars in [
            &self.t["Globals"]["Function"]["Environment"]["Variables"],
            &self.resource(function)["Properties"]["Environment"]["Variables"],
        ] {
            if let Value::Object(o) = self.eval(vars) {
                for (k, v) in o {
                    env.insert(k, v.as_str().map(str::to_owned).unwrap_or(v.to_string()));
                }
            }
        }
        env
    }

    /// The recovery state machine's definition with its `${...}` substitutions applied.
    fn definition(&self) -> Value {
        self.definition_of("RecoveryStateMachine")
    }

    /// A state machine's definition with its `${...}` substitutions applied.
    fn definition_of(&self, machine: &str) -> Value {
        let sm = &self.resource(machine)["Properties"];
        let subs = self.eval(&sm["DefinitionSubstitutions"]);
        let text = sm["Definition"].to_string();
        let mut out = text.clone();
        for (k, v) in subs.as_object().unwrap() {
            out = out.replace(&format!("${{{k}}}"), v.as_str().unwrap());
        }
        assert!(
            !out.contains("${") || out.contains("States.Format"),
            "unsubstituted variable in the definition"
        );
        serde_json::from_str(&out).unwrap()
    }
}

fn config_of(env: &BTreeMap<String, String>) -> Config {
    let env = env.clone();
    Config::from_lookup(move |k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("the template's environment is refused: {e}"))
}

// ------------------------------------------------------------------ definition checks

fn check_scope(states: &serde_json::Map<String, Value>, start: &str, path: &str) -> Vec<String> {
    let mut problems = vec![];
    let mut targets: Vec<(String, String)> = vec![];
    for (name, s) in states {
        let mut next = |t: &Value, what: &str| {
            if let Some(t) = t.as_str() {
                targets.push((format!("{path}{name}.{what}"), t.to_owned()));
            }
        };
        next(&s["Next"], "Next");
        next(&s["Default"], "Default");
        for c in s["Choices"].as_array().into_iter().flatten() {
            next(&c["Next"], "Choices.Next");
        }
        for c in s["Catch"].as_array().into_iter().flatten() {
            next(&c["Next"], "Catch.Next");
        }
        let ty = s["Type"].as_str().unwrap_or("");
        let terminal = matches!(ty, "Succeed" | "Fail" | "Choice") || s["End"] == true;
        if !terminal && s["Next"].is_null() {
            problems.push(format!("{path}{name}: neither Next nor End"));
        }
        if ty == "Map" {
            let p = &s["ItemProcessor"];
            problems.extend(check_scope(
                p["States"].as_object().unwrap(),
                p["StartAt"].as_str().unwrap(),
                &format!("{path}{name}/"),
            ));
        }
    }
    if !states.contains_key(start) {
        problems.push(format!("{path}StartAt {start} is not a state"));
    }
    for (from, to) in &targets {
        if !states.contains_key(to) {
            problems.push(format!("{from} -> {to}: no such state in this scope"));
        }
    }
    let mut seen = std::collections::BTreeSet::from([start.to_owned()]);
    let mut changed = true;
    while changed {
        changed = false;
        for (from, to) in &targets {
            let state = from.trim_start_matches(path).split('.').next().unwrap();
            if seen.contains(state) && seen.insert(to.clone()) {
                changed = true;
            }
        }
    }
    for name in states.keys() {
        if !seen.contains(name) {
            problems.push(format!("{path}{name}: unreachable"));
        }
    }
    problems
}

fn tasks(states: &serde_json::Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (name, s) in states {
        if s["Type"] == "Task" {
            out.push((name.clone(), s.clone()));
        }
        if s["Type"] == "Map" {
            tasks(s["ItemProcessor"]["States"].as_object().unwrap(), out);
        }
    }
}

#[test]
fn the_state_machine_is_well_formed_and_its_resources_exist() {
    let stack = Stack::new(&[("TableName", json!("orders"))], "bucket");
    let def = stack.definition();
    let problems = check_scope(
        def["States"].as_object().unwrap(),
        def["StartAt"].as_str().unwrap(),
        "",
    );
    assert!(problems.is_empty(), "{problems:#?}");

    // What the role may do: its SAM policy templates and statements.
    let role = stack.eval(&stack.resource("RecoveryStateMachine")["Properties"]["Policies"]);
    let mut invocable = vec![];
    let mut publishable = vec![];
    let mut actions = vec![];
    for p in role.as_array().unwrap() {
        if let Some(f) = p["LambdaInvokePolicy"]["FunctionName"].as_str() {
            invocable.push(stack.get_att(f, "Arn"));
        }
        if let Some(t) = p["SNSPublishMessagePolicy"]["TopicName"].as_str() {
            publishable.push(json!(format!("arn:aws:sns:{REGION}:{ACCOUNT}:{t}")));
        }
        for s in p["Statement"].as_array().into_iter().flatten() {
            match &s["Action"] {
                Value::String(a) => actions.push(a.clone()),
                Value::Array(a) => actions.extend(a.iter().map(|x| x.as_str().unwrap().to_owned())),
                _ => {}
            }
        }
    }
    let mut all = vec![];
    tasks(def["States"].as_object().unwrap(), &mut all);
    assert!(all.len() >= 6);
    for (name, s) in &all {
        let resource = s["Resource"].as_str().unwrap();
        match resource {
            "arn:aws:states:::lambda:invoke" => {
                let f = &s["Parameters"]["FunctionName"];
                assert!(
                    invocable.contains(f),
                    "{name}: invokes {f}, which the role may not"
                );
                let logical = f.as_str().unwrap().rsplit(':').next().unwrap();
                assert_eq!(
                    stack.resource(logical)["Type"],
                    "AWS::Serverless::Function",
                    "{name}: {logical} is not a function of the template"
                );
            }
            "arn:aws:states:::sns:publish" => {
                let t = &s["Parameters"]["TopicArn"];
                assert!(publishable.contains(t), "{name}: publishes to {t}");
                let logical = t.as_str().unwrap().rsplit(':').next().unwrap();
                assert_eq!(stack.resource(logical)["Type"], "AWS::SNS::Topic");
            }
            other => {
                let call = other
                    .strip_prefix("arn:aws:states:::aws-sdk:")
                    .unwrap_or_else(|| panic!("{name}: unexpected resource {other}"));
                let (service, api) = call.split_once(':').unwrap();
                let action = format!("{service}:{}{}", api[..1].to_uppercase(), &api[1..]);
                assert!(
                    actions.contains(&action),
                    "{name}: calls {action}, which the role may not"
                );
            }
        }
    }
    // The drill deletes only tables the restore prefix allows, and the seal function may
    // write only those.
    let prefix = stack.params["RestoreTablePrefix"].as_str().unwrap();
    let def_text = def.to_string();
    assert!(def_text.contains(&format!("{prefix}drill-")));
}

// ------------------------------------------------------------------ a tiny ASL interpreter

struct Machine<'a> {
    handler: &'a Handler,
    seal_function: String,
    ddb: aws_sdk_dynamodb::Client,
    published: Vec<(String, String)>,
    visited: Vec<String>,
    start_time: String,
}

type Failure = (String, String);

fn path_get(root: &Value, ctx: &Value, path: &str) -> Result<Value, Failure> {
    let (mut v, rest) = if let Some(r) = path.strip_prefix("$$") {
        (ctx, r)
    } else if let Some(r) = path.strip_prefix('$') {
        (root, r)
    } else {
        return Err(("States.Runtime".into(), format!("bad path {path}")));
    };
    for part in rest.split('.').filter(|p| !p.is_empty()) {
        v = v.get(part).ok_or_else(|| {
            (
                "States.Runtime".into(),
                format!("path {path}: no field {part} in {v}"),
            )
        })?;
    }
    Ok(v.clone())
}

fn path_set(root: &Value, path: &Value, value: Value) -> Value {
    match path {
        Value::Null => root.clone(),
        Value::String(p) if p == "$" => value,
        Value::String(p) => {
            let mut out = root.clone();
            let parts: Vec<&str> = p.trim_start_matches("$.").split('.').collect();
            let mut cur = &mut out;
            for (i, part) in parts.iter().enumerate() {
                if i + 1 == parts.len() {
                    cur[*part] = value;
                    break;
                }
                if !cur[*part].is_object() {
                    cur[*part] = json!({});
                }
                cur = &mut cur[*part];
            }
            out
        }
        other => panic!("ResultPath {other}"),
    }
}

/// Splits intrinsic function arguments at top-level commas.
fn split_args(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted) = (vec![], String::new(), 0, false);
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

fn expression(root: &Value, ctx: &Value, e: &str) -> Result<Value, Failure> {
    let e = e.trim();
    if let Some(s) = e.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return Ok(json!(s));
    }
    if e.starts_with('$') {
        return path_get(root, ctx, e);
    }
    if e == "true" || e == "false" {
        return Ok(json!(e == "true"));
    }
    let (name, args) = e
        .split_once('(')
        .ok_or_else(|| ("States.Runtime".to_string(), format!("expression {e}")))?;
    let args = split_args(args.strip_suffix(')').unwrap());
    let values: Vec<Value> = args
        .iter()
        .map(|a| expression(root, ctx, a))
        .collect::<Result<_, _>>()?;
    Ok(match name {
        "States.UUID" => json!(format!("{:032x}", rand_u128())),
        "States.JsonToString" => json!(values[0].to_string()),
        "States.StringToJson" => serde_json::from_str(values[0].as_str().unwrap_or(""))
            .map_err(|e| ("States.Runtime".to_string(), format!("StringToJson: {e}")))?,
        // Shallow merge (the template passes `false`): the second object's keys win.
        "States.JsonMerge" => {
            assert_eq!(values[2], json!(false), "deep merge is not modelled");
            let mut out = values[0].as_object().cloned().ok_or_else(|| {
                (
                    "States.Runtime".to_string(),
                    format!("JsonMerge of {}", values[0]),
                )
            })?;
            for (k, v) in values[1].as_object().into_iter().flatten() {
                out.insert(k.clone(), v.clone());
            }
            Value::Object(out)
        }
        "States.Format" => {
            let mut parts = values[0].as_str().unwrap().split("{}");
            let mut out = parts.next().unwrap().to_owned();
            for (v, p) in values[1..].iter().zip(parts) {
                out.push_str(
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or(v.to_string())
                        .as_str(),
                );
                out.push_str(p);
            }
            json!(out)
        }
        other => return Err(("States.Runtime".into(), format!("intrinsic {other}"))),
    })
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(7);
    (u128::from(h.finish()) << 64) | u128::from(h.finish().rotate_left(17))
}

fn resolve(template: &Value, root: &Value, ctx: &Value) -> Result<Value, Failure> {
    Ok(match template {
        Value::Object(o) => {
            let mut out = serde_json::Map::new();
            for (k, v) in o {
                match k.strip_suffix(".$") {
                    Some(k) => {
                        out.insert(k.to_owned(), expression(root, ctx, v.as_str().unwrap())?);
                    }
                    None => {
                        out.insert(k.clone(), resolve(v, root, ctx)?);
                    }
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// A Choice rule. As in Step Functions, comparing a field the input does not have is a
/// runtime error (`States.Runtime`), not a mismatch: only `IsPresent` may test for absence.
fn choose(rule: &Value, input: &Value, ctx: &Value) -> Result<bool, Failure> {
    let var = rule["Variable"].as_str().unwrap();
    let v = path_get(input, ctx, var);
    if let Some(want) = rule["IsPresent"].as_bool() {
        return Ok(v.is_ok() == want);
    }
    let v = v?;
    if let Some(want) = rule["IsNull"].as_bool() {
        return Ok(v.is_null() == want);
    }
    if let Some(s) = rule.get("StringEquals") {
        return Ok(&v == s);
    }
    if let Some(b) = rule.get("BooleanEquals") {
        return Ok(&v == b);
    }
    if let Some(p) = rule["StringMatches"].as_str() {
        return Ok(v.as_str().is_some_and(|v| string_matches(p, v)));
    }
    panic!("choice rule {rule} is not modelled");
}

/// `StringMatches`: `*` is any run of characters; a backslash makes the next one literal.
fn string_matches(pattern: &str, value: &str) -> bool {
    fn go(p: &[char], v: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('*', rest)) => (0..=v.len()).any(|i| go(rest, &v[i..])),
            Some(('\\', rest)) if !rest.is_empty() => {
                v.first() == Some(&rest[0]) && go(&rest[1..], &v[1..])
            }
            Some((c, rest)) => v.first() == Some(c) && go(rest, &v[1..]),
        }
    }
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    go(&p, &v)
}

fn matches_error(list: &Value, error: &str) -> bool {
    list.as_array().unwrap().iter().any(|e| {
        e == "States.ALL" || e == error || (e == "States.TaskFailed" && error != "States.Timeout")
    })
}

impl Machine<'_> {
    fn run<'b>(
        &'b mut self,
        states: &'b Value,
        start: &'b str,
        input: Value,
        ctx: Value,
    ) -> Pin<Box<dyn Future<Output = Result<Value, Failure>> + 'b>> {
        Box::pin(async move {
            let mut name = start.to_owned();
            let mut input = input;
            let mut steps = 0;
            loop {
                steps += 1;
                assert!(steps < 200, "the state machine loops");
                self.visited.push(name.clone());
                let s = &states[&name];
                let outcome: Result<Value, Failure> = match s["Type"].as_str().unwrap() {
                    "Pass" => {
                        let result = match s.get("Parameters") {
                            Some(p) => resolve(p, &input, &ctx),
                            None => Ok(input.clone()),
                        };
                        result.map(|r| {
                            path_set(&input, s.get("ResultPath").unwrap_or(&json!("$")), r)
                        })
                    }
                    "Choice" => {
                        let mut next = &s["Default"];
                        for c in s["Choices"].as_array().unwrap() {
                            // A Choice state has no Catch: a runtime error fails the run.
                            if choose(c, &input, &ctx)? {
                                next = &c["Next"];
                                break;
                            }
                        }
                        name = next
                            .as_str()
                            .unwrap_or_else(|| panic!("{name}: no choice matched {input}"))
                            .to_owned();
                        continue;
                    }
                    "Succeed" => return Ok(input),
                    "Fail" => {
                        return Err((
                            s["Error"].as_str().unwrap_or("").to_owned(),
                            s["Cause"].as_str().unwrap_or("").to_owned(),
                        ));
                    }
                    "Task" => self.task(s, &input, &ctx).await,
                    "Map" => self.map(s, &input, &ctx).await,
                    other => panic!("state type {other} is not modelled"),
                };
                match outcome {
                    Ok(out) => {
                        if s["End"] == true {
                            return Ok(out);
                        }
                        input = out;
                        name = s["Next"].as_str().unwrap().to_owned();
                    }
                    Err((error, cause)) => {
                        let catch = s["Catch"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|c| matches_error(&c["ErrorEquals"], &error));
                        match catch {
                            Some(c) => {
                                input = path_set(
                                    &input,
                                    c.get("ResultPath").unwrap_or(&json!("$")),
                                    json!({"Error": error, "Cause": cause}),
                                );
                                name = c["Next"].as_str().unwrap().to_owned();
                            }
                            None => return Err((error, cause)),
                        }
                    }
                }
            }
        })
    }

    async fn task(&mut self, s: &Value, input: &Value, ctx: &Value) -> Result<Value, Failure> {
        let params = resolve(&s["Parameters"], input, ctx)?;
        let mut attempts: HashMap<usize, u64> = HashMap::new();
        let result = loop {
            let r = self.call(s["Resource"].as_str().unwrap(), &params).await;
            match r {
                Ok(v) => break Ok(v),
                Err((error, cause)) => {
                    let retry = s["Retry"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .find(|(_, r)| matches_error(&r["ErrorEquals"], &error));
                    match retry {
                        Some((i, r)) => {
                            let n = attempts.entry(i).or_default();
                            *n += 1;
                            if *n > r["MaxAttempts"].as_u64().unwrap_or(3) {
                                break Err((error, cause));
                            }
                        }
                        None => break Err((error, cause)),
                    }
                }
            }
        }?;
        let selected = match s.get("ResultSelector") {
            Some(sel) => resolve(sel, &result, ctx)?,
            None => result,
        };
        Ok(path_set(
            input,
            s.get("ResultPath").unwrap_or(&json!("$")),
            selected,
        ))
    }

    async fn call(&mut self, resource: &str, params: &Value) -> Result<Value, Failure> {
        match resource {
            "arn:aws:states:::lambda:invoke" => {
                assert_eq!(params["FunctionName"], json!(self.seal_function));
                let payload = RawValue::from_string(params["Payload"].to_string()).unwrap();
                match self.handler.handle(&payload).await {
                    Ok(outcome) => Ok(json!({"StatusCode": 200, "Payload": outcome_json(outcome)})),
                    Err(e) => Err(("LambdaError".into(), e.to_string())),
                }
            }
            "arn:aws:states:::sns:publish" => {
                self.published.push((
                    params["Subject"].as_str().unwrap_or("").to_owned(),
                    params["Message"].as_str().unwrap_or("").to_owned(),
                ));
                Ok(json!({"MessageId": "m"}))
            }
            "arn:aws:states:::aws-sdk:dynamodb:deleteTable" => self
                .ddb
                .delete_table()
                .table_name(params["TableName"].as_str().unwrap())
                .send()
                .await
                .map(|_| json!({}))
                .map_err(|e| ("DynamoDb.ResourceNotFoundException".into(), e.to_string())),
            other => panic!("resource {other} is not modelled"),
        }
    }

    async fn map(&mut self, s: &Value, input: &Value, ctx: &Value) -> Result<Value, Failure> {
        let items = path_get(input, ctx, s["ItemsPath"].as_str().unwrap_or("$"))?;
        let p = &s["ItemProcessor"];
        let mut results = vec![];
        for (i, item) in items.as_array().unwrap().iter().enumerate() {
            let mut item_ctx = ctx.clone();
            item_ctx["Map"] = json!({"Item": {"Index": i, "Value": item}});
            let item_input = match s.get("ItemSelector") {
                Some(sel) => resolve(sel, input, &item_ctx)?,
                None => item.clone(),
            };
            let out = self
                .run(
                    &p["States"],
                    p["StartAt"].as_str().unwrap(),
                    item_input,
                    ctx.clone(),
                )
                .await?;
            results.push(out);
        }
        Ok(path_set(
            input,
            s.get("ResultPath").unwrap_or(&json!("$")),
            Value::Array(results),
        ))
    }

    async fn execute(&mut self, definition: &Value, input: Value) -> Result<Value, Failure> {
        self.visited.clear();
        let ctx = json!({"Execution": {
            "StartTime": self.start_time,
            "Id": format!("arn:aws:states:{REGION}:{ACCOUNT}:execution:recovery:{:x}", rand_u128()),
        }});
        self.run(
            &definition["States"],
            definition["StartAt"].as_str().unwrap(),
            input,
            ctx,
        )
        .await
    }
}

fn outcome_json(o: Outcome) -> Value {
    match o {
        Outcome::Stream(r, _) => serde_json::to_value(r).unwrap(),
        // What `streamseal::lambda::serve` returns to the runtime.
        Outcome::Trigger(t) => t.reply(),
        Outcome::OnFailure(v, _) => v,
        Outcome::Restore(r) => r.reply(),
        Outcome::Task(v) => v,
    }
}

/// EventBridge pattern matching for the forms the template uses: arrays of allowed values,
/// nested objects.
fn pattern_matches(pattern: &Value, event: &Value) -> bool {
    match pattern {
        Value::Object(o) => o
            .iter()
            .all(|(k, p)| event.get(k).is_some_and(|e| pattern_matches(p, e))),
        Value::Array(allowed) => allowed.contains(event),
        other => panic!("pattern {other} is not modelled"),
    }
}

// ------------------------------------------------------------------ the system on the emulator

struct Deployed {
    stack: Stack,
    store: Arc<dyn ObjectStore>,
    ddb: aws_sdk_dynamodb::Client,
    streams: SdkStreams,
    stream_arn: String,
}

/// A source table with a stream on the emulator, a bucket, and the stack's parameters.
async fn deployed(table: &str, bucket: &str, overrides: &[(&str, Value)]) -> Deployed {
    let ddb = common::dynamodb_client(None);
    common::create_orders_table(&ddb, table, true).await;
    let stream_arn = streamseal::aws::tail::stream_arn(&ddb, table)
        .await
        .unwrap();
    let mut params: Vec<(&str, Value)> = vec![
        ("TableName", json!(table)),
        ("StreamArn", json!(stream_arn.clone())),
    ];
    params.extend(overrides.iter().cloned());
    let stack = Stack::new(&params, bucket);
    let target = stack.environment("SealFunction")["STREAMSEAL_TARGET"].clone();
    assert_eq!(target, format!("s3://{bucket}/backups"));
    let store = common::fresh_s3_store(bucket, "backups").await;
    let streams_config = aws_sdk_dynamodbstreams::Config::from(&moto_config());
    let streams = SdkStreams(aws_sdk_dynamodbstreams::Client::from_conf(streams_config));
    Deployed {
        stack,
        store,
        ddb,
        streams,
        stream_arn,
    }
}

fn moto_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&common::moto().endpoint)
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "tests"),
        ))
        .build()
}

impl Deployed {
    async fn function(&self, name: &str) -> Handler {
        let config = config_of(&self.stack.environment(name));
        let handler = Handler::with_store(self.store.clone(), &config)
            .await
            .unwrap()
            .with_dynamodb(self.ddb.clone());
        if config.shard_map_every.is_some() {
            handler.with_streams(Arc::new(self.streams.clone()))
        } else {
            handler
        }
    }

    /// What the event source mapping does: read the stream from where it left off and invoke
    /// the ingest function with each batch; returns the records delivered.
    async fn pump(&self, ingest: &Handler, after: &mut HashMap<String, String>) -> usize {
        let mut delivered = 0;
        for shard in self.streams.shards(&self.stream_arn).await.unwrap() {
            let Some(mut it) = self
                .streams
                .iterator(
                    &self.stream_arn,
                    &shard.shard_id,
                    after.get(&shard.shard_id).map(String::as_str),
                )
                .await
                .unwrap()
            else {
                continue;
            };
            loop {
                let page = self.streams.records(&it, 100).await.unwrap();
                if page.records.is_empty() {
                    break;
                }
                let event = lambda_event(&page.records, &self.stream_arn, REGION).unwrap();
                let out = ingest
                    .handle(&RawValue::from_string(event).unwrap())
                    .await
                    .unwrap();
                assert_eq!(outcome_json(out)["batchItemFailures"], json!([]));
                delivered += page.records.len();
                if let Some(seq) = page
                    .records
                    .last()
                    .and_then(|r| r.dynamodb())
                    .and_then(|d| d.sequence_number())
                {
                    after.insert(shard.shard_id.clone(), seq.to_owned());
                }
                match page.next {
                    Some(n) => it = n,
                    None => break,
                }
            }
        }
        delivered
    }
}

#[tokio::test]
async fn the_functions_accept_their_environment_and_the_mapping_is_safe() {
    let stack = Stack::new(
        &[
            ("TableName", json!("orders")),
            (
                "StreamArn",
                json!(
                    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"
                ),
            ),
            ("SchemaLocation", json!("s3://schemas-bucket/schemas")),
            ("ObjectLockRetentionDays", json!("365")),
        ],
        "bucket",
    );
    for f in ["IngestFunction", "SealFunction"] {
        let env = stack.environment(f);
        let c = config_of(&env);
        assert_eq!(c.target, "s3://bucket/backups");
        assert_eq!(c.seal_tables, ["orders"]);
        assert_eq!(c.schemas.as_deref(), Some("s3://schemas-bucket/schemas"));
        for k in env.keys() {
            assert!(
                k == "RUST_LOG" || streamseal::lambda::CONFIG_VARIABLES.contains(&k.as_str()),
                "{f}: the template sets {k}, which the function does not read"
            );
        }
    }
    assert!(
        config_of(&stack.environment("SealFunction"))
            .retention
            .is_some()
    );
    let events = stack.eval(&stack.resource("IngestFunction")["Properties"]["Events"]);
    let m = &events["Stream"]["Properties"];
    assert_eq!(
        m["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert_eq!(m["BisectBatchOnFunctionError"], true);
    assert_eq!(
        m["MaximumRetryAttempts"], -1,
        "retry until the records expire"
    );
    // Finite and below the stream's 24 h: Lambda itself discards a batch it could not write
    // in time and sends its on-failure message, which becomes a recorded gap.
    let age = m["MaximumRecordAgeInSeconds"].as_i64().unwrap();
    assert!((60..86_400).contains(&age), "{age}");
    let destination = &m["DestinationConfig"]["OnFailure"]["Destination"];
    let q = &events["OnFailureMessages"]["Properties"];
    assert_eq!(
        &q["Queue"], destination,
        "the function reads the queue its mapping sends failures to"
    );
    assert_eq!(
        q["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    let timeout = stack.resource("IngestFunction")["Properties"]["Timeout"]
        .as_u64()
        .unwrap();
    let visibility = stack.resource("OnFailureQueue")["Properties"]["VisibilityTimeout"]
        .as_u64()
        .unwrap();
    assert!(
        visibility >= 6 * timeout,
        "SQS visibility below 6x the function timeout"
    );
}

#[tokio::test]
async fn stream_and_on_failure_messages_reach_the_ingest_function() {
    let d = deployed("deploy-ingest", "deploy-ingest", &[]).await;
    let ingest = d.function("IngestFunction").await;
    let mut w = streamseal::demo::workload::Workload::new(
        5,
        "deploy-ingest",
        streamseal::model::change::StreamViewType::NewAndOldImages,
        40,
    );
    for _ in 0..60 {
        common::apply_change(&d.ddb, "deploy-ingest", &mut w).await;
    }
    let mut after = HashMap::new();
    assert_eq!(d.pump(&ingest, &mut after).await, 60);
    // The function kept the shard map with the key roles, so a seal records the key schema.
    let maps = streamseal::model::shards::load_shard_maps(d.store.as_ref(), "deploy-ingest")
        .await
        .unwrap();
    assert_eq!(
        maps.first()
            .and_then(|m| m.key.clone())
            .map(|k| k.partition),
        Some("pk".to_owned())
    );

    // The on-failure destination's message, as SQS delivers it to the same function.
    let body = common::fixture("deploy/on-failure-invocation-record.json")
        .replace("TABLE_STREAM_ARN", &d.stream_arn);
    let sqs = |id: &str, body: &str| {
        json!({"Records": [{
            "messageId": id,
            "receiptHandle": "AQEB",
            "body": body,
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764252000000",
                "SenderId": "AROA", "ApproximateFirstReceiveTimestamp": "1764252000001"},
            "messageAttributes": {},
            "md5OfBody": "0",
            "eventSource": "aws:sqs",
            "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:OnFailureQueue"),
            "awsRegion": REGION
        }]})
        .to_string()
    };
    let out = ingest
        .handle(&RawValue::from_string(sqs("m-1", &body)).unwrap())
        .await
        .unwrap();
    assert_eq!(outcome_json(out), json!({"batchItemFailures": []}));
    let out = ingest
        .handle(&RawValue::from_string(sqs("m-2", "{\"not\": \"a record\"}")).unwrap())
        .await
        .unwrap();
    assert_eq!(
        outcome_json(out),
        json!({"batchItemFailures": [{"itemIdentifier": "m-2"}]}),
        "a message that is not an invocation record goes back to the queue (then its DLQ)"
    );

    // The gap is sealed and verify names it: the snapshot is incomplete, which a recovery
    // must know but which does not stop it (only a corrupt snapshot fails the invocation).
    let seal = d.function("SealFunction").await;
    let out = seal
        .handle(
            &RawValue::from_string(json!({"action": "seal", "table": "deploy-ingest"}).to_string())
                .unwrap(),
        )
        .await
        .unwrap();
    let report = outcome_json(out);
    assert_eq!(report["status"], "incomplete", "{report}");
    let t = &report["tables"][0];
    assert_eq!(t["first_findings"][0]["kind"], "gap", "{report}");
    assert!(
        t["first_findings"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("known gap reported by lambda-on-failure: 3 record(s) missing"),
        "{report}"
    );
}

#[tokio::test]
async fn outage_events_and_the_drill_run_the_state_machine_end_to_end() {
    common::clear_of_the_hour_end(120);
    let d = deployed(
        "deploy-orders",
        "deploy-orders",
        &[
            ("RestoreOnOutage", json!("true")),
            ("AlarmNames", json!(["orders-dynamodb-system-errors"])),
        ],
    )
    .await;
    let ingest = d.function("IngestFunction").await;
    let seal = d.function("SealFunction").await;
    let mut w = streamseal::demo::workload::Workload::new(
        9,
        "deploy-orders",
        streamseal::model::change::StreamViewType::NewAndOldImages,
        80,
    );
    for _ in 0..200 {
        common::apply_change(&d.ddb, "deploy-orders", &mut w).await;
    }
    let mut after = HashMap::new();
    assert_eq!(d.pump(&ingest, &mut after).await, 200);
    let source = common::scan_items(&d.ddb, "deploy-orders").await;

    let definition = d.stack.definition();
    let mut machine = Machine {
        handler: &seal,
        seal_function: d
            .stack
            .get_att("SealFunction", "Arn")
            .as_str()
            .unwrap()
            .to_owned(),
        ddb: d.ddb.clone(),
        published: vec![],
        visited: vec![],
        start_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let events = d
        .stack
        .eval(&d.stack.resource("RecoveryStateMachine")["Properties"]["Events"]);
    let pattern = |rule: &str| events[rule]["Properties"]["Pattern"].clone();

    // An alarm entering ALARM: it matches the rule, and the execution seals, deep-verifies,
    // restores into a new table equal to the source, and notifies.
    let alarm: Value =
        serde_json::from_str(&common::fixture("triggers/cloudwatch-alarm.json")).unwrap();
    assert!(pattern_matches(&pattern("AlarmEntersAlarm"), &alarm));
    let out = machine
        .execute(&definition, alarm)
        .await
        .unwrap_or_else(|e| panic!("execution failed: {e:?} after {:?}", machine.visited));
    for state in ["Seal", "Verify", "RecoveryTarget", "Restore", "Notify"] {
        assert!(
            machine.visited.iter().any(|v| v == state),
            "{state} not run: {:?}",
            machine.visited
        );
    }
    let table = &out["tables"][0];
    assert_eq!(table["status"], "ok", "{table}");
    assert_eq!(table["ok"], true, "{table}");
    assert!(
        table["report_key"]
            .as_str()
            .unwrap()
            .starts_with("deploy-orders/reports/"),
        "{table}"
    );
    let restored = &table["restored"];
    assert_eq!(restored["complete"], true);
    assert_eq!(restored["matches"], true);
    let target = restored["target_table"].as_str().unwrap();
    assert!(
        target.starts_with("streamseal-restore-deploy-orders-"),
        "{target}"
    );
    assert_eq!(
        common::scan_items(&d.ddb, target).await,
        source,
        "restored table differs"
    );
    assert_eq!(machine.published.len(), 1);
    assert!(machine.published[0].0.contains("sealed and verified"));

    // The alarm returning to OK matches no rule (the pattern wants ALARM); were it delivered,
    // the execution would end without sealing.
    let ok: Value =
        serde_json::from_str(&common::fixture("triggers/cloudwatch-alarm-ok.json")).unwrap();
    assert!(!pattern_matches(&pattern("AlarmEntersAlarm"), &ok));
    machine.execute(&definition, ok).await.unwrap();
    assert_eq!(
        machine.visited.last().map(String::as_str),
        Some("NothingToDo")
    );

    // An AWS Health event in the same hour as the alarm: the same outage, already being
    // recovered; the execution is a duplicate and ends without sealing or restoring.
    let health: Value = serde_json::from_str(&common::fixture("triggers/aws-health.json")).unwrap();
    assert!(pattern_matches(&pattern("DynamoDbHealthEvent"), &health));
    machine.execute(&definition, health).await.unwrap();
    assert_eq!(
        machine.visited.last().map(String::as_str),
        Some("NothingToDo"),
        "{:?}",
        machine.visited
    );
    assert!(!machine.visited.iter().any(|v| v == "Restore"));

    // The manual request (EventBridge), and the state machine started by hand with
    // {"action": "restore"} or with "drill": false: seal, verify and restore (this stack sets
    // RestoreOnOutage; "action": "restore" restores whatever it says).
    let manual = [
        json!({"action": "restore", "table": "deploy-orders", "reason": "by hand"}),
        json!({"action": "seal", "table": "deploy-orders", "drill": false}),
    ];
    for (fixture, rule, input) in [
        ("triggers/seal-requested.json", "SealRequested", None),
        ("", "", Some(&manual[0])),
        ("", "", Some(&manual[1])),
    ] {
        let mut e: Value = match input {
            Some(v) => v.clone(),
            None => serde_json::from_str(&common::fixture(fixture)).unwrap(),
        };
        let fixture = if fixture.is_empty() {
            e.to_string()
        } else {
            fixture.to_owned()
        };
        if rule == "SealRequested" {
            e["detail"] = json!({"table": "deploy-orders", "reason": "test", "deep": true});
        }
        assert!(
            rule.is_empty() || pattern_matches(&pattern(rule), &e),
            "{fixture} does not match {rule}"
        );
        for _ in 0..5 {
            common::apply_change(&d.ddb, "deploy-orders", &mut w).await;
        }
        d.pump(&ingest, &mut after).await;
        let out = machine
            .execute(&definition, e)
            .await
            .unwrap_or_else(|e| panic!("{fixture}: {e:?} after {:?}", machine.visited));
        assert!(
            !machine.visited.iter().any(|v| v == "DrillTarget"),
            "{fixture} is not a drill: {:?}",
            machine.visited
        );
        assert_eq!(out["tables"][0]["restored"]["matches"], true, "{fixture}");
        let t = out["tables"][0]["restored"]["target_table"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            common::scan_items(&d.ddb, &t).await,
            common::scan_items(&d.ddb, "deploy-orders").await,
            "{fixture}"
        );
    }

    // Scheduled changes and account notices from AWS Health are not outages.
    for category in ["scheduledChange", "accountNotification"] {
        let mut e: Value =
            serde_json::from_str(&common::fixture("triggers/aws-health.json")).unwrap();
        e["detail"]["eventTypeCategory"] = json!(category);
        assert!(
            !pattern_matches(&pattern("DynamoDbHealthEvent"), &e),
            "{category}"
        );
    }

    // The scheduled drill: its input, the restore into a scratch table, the table deleted.
    let input: Value = serde_json::from_str(
        events["RestoreDrill"]["Properties"]["Input"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let out = machine
        .execute(&definition, input)
        .await
        .unwrap_or_else(|e| panic!("drill: {e:?} after {:?}", machine.visited));
    assert!(machine.visited.iter().any(|v| v == "DeleteDrillTable"));
    let drill = &out["tables"][0]["restored"];
    assert_eq!(drill["drill"], true);
    assert_eq!(drill["matches"], true);
    assert!(drill["rto_ms"].as_i64().unwrap() >= 0);
    let scratch = drill["target_table"].as_str().unwrap();
    assert!(
        scratch.starts_with("streamseal-restore-drill-"),
        "{scratch}"
    );
    let gone = d.ddb.describe_table().table_name(scratch).send().await;
    assert!(
        gone.is_err(),
        "the drill's scratch table {scratch} was not deleted"
    );
}

/// The distributed restore as `LargeRestoreStateMachine` runs it, on the emulator: changes
/// captured and sealed; the scheduled checkpoint (the schedule's own input, through the
/// handler; with `KeepChangesDays` set, expire runs after it and finds nothing that old), run
/// twice as an asynchronous retry would; more changes sealed after the checkpoint; then the
/// machine's definition: inputs outside `RestoreTablePrefix` or without a table fail before
/// any task, and a restore into a prefixed table plans from the checkpoint, runs one
/// `restore-partition` per iteration of the distributed Map, checks until complete, and
/// notifies. The target equals the source and the restore's checkpoints are gone.
#[tokio::test]
async fn the_large_restore_state_machine_restores_from_a_checkpoint_end_to_end() {
    let table = "deploy-large";
    let d = deployed(table, table, &[("KeepChangesDays", json!("35"))]).await;
    assert_eq!(
        d.stack
            .environment("SealFunction")
            .get("STREAMSEAL_KEEP_CHANGES_DAYS")
            .map(String::as_str),
        Some("35")
    );
    let ingest = d.function("IngestFunction").await;
    let seal = d.function("SealFunction").await;
    let call = async |input: Value| {
        let text = input.to_string();
        match seal.handle(&RawValue::from_string(text).unwrap()).await {
            Ok(out) => outcome_json(out),
            Err(e) => panic!("{input}: {e}"),
        }
    };
    let mut w = streamseal::demo::workload::Workload::new(
        13,
        table,
        streamseal::model::change::StreamViewType::NewAndOldImages,
        60,
    );
    for _ in 0..150 {
        common::apply_change(&d.ddb, table, &mut w).await;
    }
    let mut after = HashMap::new();
    assert_eq!(d.pump(&ingest, &mut after).await, 150);
    let sealed = call(json!({"action": "seal", "table": table})).await;
    assert_eq!(sealed["status"], "ok", "{sealed}");
    let first = sealed["tables"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The scheduled checkpoint, with the schedule's input.
    let events = d
        .stack
        .eval(&d.stack.resource("SealFunction")["Properties"]["Events"]);
    let schedule = &events["Checkpoint"]["Properties"];
    assert_eq!(schedule["State"], "ENABLED", "{schedule}");
    let input: Value = serde_json::from_str(schedule["Input"].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({"action": "checkpoint", "table": table}));
    let made = call(input.clone()).await;
    assert_eq!(made["checkpoint"], json!(first), "{made}");
    assert_eq!(made["existing"], false, "{made}");
    assert_eq!(
        made["items"],
        json!(common::scan_items(&d.ddb, table).await.len()),
        "{made}"
    );
    assert!(made["partitions"].as_u64().unwrap() >= 1, "{made}");
    // KeepChangesDays=35: expire ran (a number, not null) and nothing is that old.
    assert_eq!(made["expired_objects"], 0, "{made}");
    assert!(made["expire_record"].is_null(), "{made}");
    assert!(
        !d.store
            .list(&format!("{table}/checkpoint-manifests/"), None, None)
            .await
            .unwrap()
            .is_empty()
    );
    // Lambda retries a failed asynchronous invocation: running it again writes nothing new.
    let again = call(input).await;
    assert_eq!(again["checkpoint"], json!(first), "{again}");
    assert_eq!(again["existing"], true, "{again}");

    // Changes after the checkpoint, sealed: the restore reads the checkpoint plus these.
    for _ in 0..40 {
        common::apply_change(&d.ddb, table, &mut w).await;
    }
    assert!(d.pump(&ingest, &mut after).await >= 40);
    let resealed = call(json!({"action": "seal", "table": table})).await;
    assert_eq!(resealed["status"], "ok", "{resealed}");
    let latest = resealed["tables"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(latest, first);
    let source = common::scan_items(&d.ddb, table).await;

    let definition = d.stack.definition_of("LargeRestoreStateMachine");
    let problems = check_scope(
        definition["States"].as_object().unwrap(),
        definition["StartAt"].as_str().unwrap(),
        "",
    );
    assert!(problems.is_empty(), "{problems:#?}");
    let mut machine = Machine {
        handler: &seal,
        seal_function: d
            .stack
            .get_att("SealFunction", "Arn")
            .as_str()
            .unwrap()
            .to_owned(),
        ddb: d.ddb.clone(),
        published: vec![],
        visited: vec![],
        start_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };

    // Refused before any task runs.
    let prefix = d.stack.params["RestoreTablePrefix"]
        .as_str()
        .unwrap()
        .to_owned();
    for (input, error) in [
        (
            json!({"table": table, "target_table": format!("{table}-copy")}),
            "NotARestoreTable",
        ),
        (
            json!({"table": table, "target_table": table}),
            "NotARestoreTable",
        ),
        (
            json!({"target_table": format!("{prefix}{table}-x")}),
            "InvalidInput",
        ),
    ] {
        let e = machine
            .execute(&definition, input.clone())
            .await
            .unwrap_err();
        assert_eq!(e.0, error, "{input}: {e:?}");
        assert!(
            !machine.visited.iter().any(|v| v == "Plan"),
            "{input}: {:?}",
            machine.visited
        );
    }
    assert!(machine.published.is_empty());

    // The restore, in 3 partitions (the checkpoint's count is the default; another count
    // works too: each partition then reads the checkpoint and keeps its own keys).
    let target = format!("{prefix}{table}-distributed");
    let out = machine
        .execute(
            &definition,
            json!({"table": table, "target_table": target, "partitions": 3}),
        )
        .await
        .unwrap_or_else(|e| panic!("large restore: {e:?} after {:?}", machine.visited));
    for state in ["Plan", "Partitions", "Check", "Notify"] {
        assert!(
            machine.visited.iter().any(|v| v == state),
            "{state} not run: {:?}",
            machine.visited
        );
    }
    assert_eq!(
        machine
            .visited
            .iter()
            .filter(|v| *v == "RestorePartition")
            .count(),
        3,
        "{:?}",
        machine.visited
    );
    assert_eq!(out["complete"], true, "{out}");
    assert_eq!(out["matches"], true, "{out}");
    assert_eq!(out["snapshot"], json!(latest), "{out}");
    assert_eq!(out["checkpoint"], json!(first), "{out}");
    assert_eq!(out["partitions"], 3, "{out}");
    assert_eq!(out["target_table"], json!(target), "{out}");
    assert_eq!(out["items"], json!(source.len()), "{out}");
    assert_eq!(out["target_items"], json!(source.len()), "{out}");
    assert!(out["unproven"].is_null(), "{out}");
    assert_eq!(
        common::scan_items(&d.ddb, &target).await,
        source,
        "restored table differs"
    );
    assert_eq!(machine.published.len(), 1, "{:?}", machine.published);
    assert!(
        machine.published[0]
            .0
            .contains("distributed restore complete"),
        "{:?}",
        machine.published
    );
    // The check removed the plan and the partitions' checkpoints.
    let left = d
        .store
        .list(&format!("{table}/restores/"), None, None)
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "{:?}",
        left.iter().map(|o| o.key.clone()).collect::<Vec<_>>()
    );
}
