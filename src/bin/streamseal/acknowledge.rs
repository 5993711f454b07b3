//! `streamseal acknowledge`: record a decision about an open finding.

use anyhow::Result;
use streamseal::model::findings::Kind;

use crate::common::{self, TableTarget};
use crate::output::{self, Output};

/// Record a decision about an open finding (a gap, a rejected entry, a quarantined
/// record), so verify stops failing on it.
///
/// Writes an acknowledgment entry naming the finding (its id, as verify prints it) with
/// your reason, then seals, which records the decision in the findings ledger for good:
/// every later verify lists it as acknowledged, with who and why. Refuses ids that are
/// not open in the latest snapshot's ledger.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// The finding's id, as verify prints it (e.g. gap-3fa19c2b7d01e4a5); repeat for several.
    #[arg(long = "finding", value_name = "ID", required = true)]
    findings: Vec<String>,
    /// Why the finding is acceptable, or what was done about it (kept for good).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Who decides (default: $USER).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    /// Only write the acknowledgment; the next seal records it.
    #[arg(long)]
    no_seal: bool,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let store = args.at.open().await?;
    let by = args.by.clone().unwrap_or_else(common::whoami);
    let entries = streamseal::model::findings::acknowledge(
        store.as_ref(),
        &args.at.table,
        &args.findings,
        &args.reason,
        &by,
        &streamseal::model::clock::SystemClock,
    )
    .await?;
    if args.no_seal {
        return out.result(&serde_json::json!({"entries": entries}), || {
            for e in &entries {
                println!("wrote {e}; the next seal records it");
            }
        });
    }
    let options = streamseal::ops::seal::SealOptions {
        reason: format!(
            "acknowledge {} by {by}: {}",
            args.findings.join(", "),
            args.reason
        ),
        ..Default::default()
    };
    let report = streamseal::ops::seal::seal(&store, &args.at.table, &options).await?;
    let verify =
        crate::seal::verify_sealed(&store, &args.at.table, &report.manifest.snapshot_id).await?;
    out.result(
        &serde_json::json!({"entries": entries, "seal": report, "verify": verify}),
        || {
            for f in report
                .findings
                .iter()
                .filter(|f| f.kind == Kind::Acknowledged)
            {
                println!(
                    "recorded in snapshot {}: {}",
                    report.manifest.snapshot_id, f.problem
                );
            }
            print!("{}", verify.render());
        },
    )?;
    output::verdict(&verify, "acknowledged and sealed")
}
