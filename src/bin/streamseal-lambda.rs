//! The Lambda entry point: build the handler once per container, then serve invocations.
//!
//! Configuration comes from the environment (see `streamseal::lambda`). Logs are JSON (one
//! object per line, which CloudWatch Logs Insights parses); metrics are CloudWatch Embedded
//! Metric Format lines on stdout.

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::value::RawValue;
use streamseal::lambda::{Config, Handler, serve};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(false)
        .with_ansi(false)
        .without_time() // CloudWatch stamps every line already
        .init();
    let config = Config::from_env()?;
    let handler = Arc::new(Handler::new(&config).await?);
    tracing::info!(target_url = %config.target, schemas = ?config.schemas, "streamseal-lambda ready");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let handler = handler.clone();
        async move { serve(&handler, event).await.map_err(Error::from) }
    }))
    .await
}
