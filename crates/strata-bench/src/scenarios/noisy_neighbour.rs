//! A noisy neighbour: does a client held to a produce quota leave another client's latency
//! alone? The quiet client produces stamped records at a steady `--rate` for
//! `--latency-seconds` and measures their end-to-end latency, first alone, then while the noisy
//! client (client id [`NOISY_CLIENT_ID`], with a `producer_byte_rate` of `--noisy-quota` set
//! through AlterClientQuotas) produces as fast as it can into a topic of its own.
//!
//! The noisy client's rate is reported against its quota as its average over its whole run.
//! Kafka's sampled `Rate` (11 samples of 1 s) does not make a throttled client smooth: a cold
//! client may send 10 s of its quota at once, is then held back until that burst leaves the
//! window, and goes on in bursts and pauses about 10 s apart; only over several such periods is
//! its rate its quota (within 5% after a minute). The run is sized for `--noisy-seconds` at
//! the quota, and the quiet client measures after the first burst, through bursts and pauses.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{read_response_frame, unique_name, Bench};
use crate::producer::ProducerLoad;
use crate::report::{NoisyNeighbour, Percentiles};

/// The noisy client's id, which its quota is set for.
pub const NOISY_CLIENT_ID: &str = "strata-bench-noisy";
/// How long the noisy client runs before the quiet one measures: past its first burst.
const SETTLE_SECONDS: f64 = 3.0;

impl Bench<'_> {
    pub(super) fn noisy_neighbour(&mut self) -> anyhow::Result<()> {
        let a = self.args;
        let quota = a.noisy_quota.0 as f64;
        let rate = a.rate.map_or(1000.0, |r| r as f64);
        let seconds = a.latency_seconds;
        let quiet = unique_name("strata-bench-quiet");
        let noisy = unique_name("strata-bench-noisy");
        for topic in [&quiet, &noisy] {
            self.clients.create_topic(topic, a.partitions)?;
            self.created_topics.push(topic.clone());
        }
        set_producer_quota(&self.clients.bootstrap, NOISY_CLIENT_ID, Some(quota))?;
        let measured = self.noisy_rounds(&quiet, &noisy, quota, rate, seconds);
        let removed = set_producer_quota(&self.clients.bootstrap, NOISY_CLIENT_ID, None);
        let report = measured?;
        removed?;
        self.report.noisy_neighbour = Some(report);
        Ok(())
    }

    fn noisy_rounds(
        &self,
        quiet: &str,
        noisy: &str,
        quota: f64,
        rate: f64,
        seconds: f64,
    ) -> anyhow::Result<NoisyNeighbour> {
        tracing::info!("noisy-neighbour: the quiet client alone, {rate:.0} records/s");
        let alone = self.quiet_latency(quiet, rate, seconds)?;
        let record_size = self.args.record_size.0 as usize;
        // Enough to outlast the quiet measurement, and several periods of the quota's bursts.
        let noisy_seconds = (SETTLE_SECONDS + seconds + 3.0).max(self.args.noisy_seconds);
        let noisy_bytes = quota * noisy_seconds;
        let load = ProducerLoad {
            config: self
                .clients
                .producer(self.args)
                .set("client.id", NOISY_CLIENT_ID)
                .clone(),
            topic: noisy,
            producers: 1,
            record_size,
            records: (noisy_bytes / record_size as f64).ceil().max(1.0) as u64,
            rate: None,
            stamp_epoch: None,
        };
        tracing::info!(
            "noisy-neighbour: with a noisy client held to {:.1} MB/s",
            quota / 1e6
        );
        let (produced, with_noisy) = thread::scope(|scope| {
            let noisy_run = scope.spawn(|| load.run());
            thread::sleep(Duration::from_secs_f64(SETTLE_SECONDS));
            let with_noisy = self.quiet_latency(quiet, rate, seconds);
            let produced = noisy_run
                .join()
                .map_err(|_| anyhow::anyhow!("the noisy producer panicked"))?;
            anyhow::Ok((produced?, with_noisy?))
        })?;
        let transfer = produced.transfer;
        let noisy_rate = transfer.bytes as f64 / transfer.seconds.max(1e-9);
        Ok(NoisyNeighbour {
            quota_mb_per_s: quota / 1e6,
            noisy_bytes: transfer.bytes,
            noisy_seconds: transfer.seconds,
            noisy_mb_per_s: noisy_rate / 1e6,
            noisy_rate_over_quota: noisy_rate / quota,
            quiet_rate: rate,
            p99_with_over_alone: with_noisy.p99_ms / alone.p99_ms.max(1e-3),
            quiet_alone: alone,
            quiet_with_noisy: with_noisy,
        })
    }

    /// The end-to-end latency of `rate` stamped records a second for `seconds` through `topic`.
    fn quiet_latency(&self, topic: &str, rate: f64, seconds: f64) -> anyhow::Result<Percentiles> {
        let (_, consumed) = self.paced_round_trip_on(topic, rate, seconds)?;
        let Some(histogram) = consumed.latency_us else {
            bail!("the quiet client recorded no latencies");
        };
        Ok(Percentiles::of(&histogram))
    }
}

/// Sets (or with `None` removes) the `producer_byte_rate` of client id `client_id` with
/// AlterClientQuotas v1 on `bootstrap` (librdkafka has no client for it).
fn set_producer_quota(
    bootstrap: &str,
    client_id: &str,
    bytes_per_s: Option<f64>,
) -> anyhow::Result<()> {
    const VERSION: i16 = 1;
    let api = ApiKey::AlterClientQuotas;
    let request = AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
        .with_entity(vec![EntityData::default()
            .with_entity_type(StrBytes::from_static_str("client-id"))
            .with_entity_name(Some(StrBytes::from_string(
                client_id.to_string(),
            )))])
        .with_ops(vec![OpData::default()
            .with_key(StrBytes::from_static_str("producer_byte_rate"))
            .with_value(bytes_per_s.unwrap_or_default())
            .with_remove(bytes_per_s.is_none())])]);
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("strata-bench")));
    let mut body = BytesMut::new();
    header.encode(&mut body, api.request_header_version(VERSION))?;
    request.encode(&mut body, VERSION)?;
    let mut stream = TcpStream::connect(bootstrap)
        .with_context(|| format!("cannot connect to {bootstrap} to set a client quota"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(&(body.len() as i32).to_be_bytes())?;
    stream.write_all(&body)?;
    let mut frame = bytes::Bytes::from(read_response_frame(&mut stream, "AlterClientQuotas")?);
    ResponseHeader::decode(&mut frame, api.response_header_version(VERSION))?;
    let response = AlterClientQuotasResponse::decode(&mut frame, VERSION)?;
    for entry in &response.entries {
        if entry.error_code != 0 {
            bail!(
                "AlterClientQuotas refused the quota of {client_id}: error {} {}",
                entry.error_code,
                entry.error_message.as_deref().unwrap_or("")
            );
        }
    }
    if frame.has_remaining() {
        bail!("AlterClientQuotas answered with bytes after its response");
    }
    Ok(())
}
