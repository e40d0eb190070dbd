//! The cost of TLS: one private broker with a PLAINTEXT and an SSL listener (a throw-away
//! self-signed certificate), and the same produce and consume loads over each, one after the
//! other in the same run, so that the ratio holds on a noisy machine. librdkafka speaks TLS
//! through the system's OpenSSL, the broker through rustls.

use std::fs;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;

use super::{metered_on, unique_name, Bench};
use crate::client::Clients;
use crate::consumer::ConsumerLoad;
use crate::process::{LocalBroker, ProcessStats};
use crate::producer::ProducerLoad;
use crate::report::{Throughput, Tls};

impl Bench<'_> {
    pub(super) fn tls(&mut self) -> anyhow::Result<()> {
        if self.args.bootstrap.is_some() {
            self.report
                .notes
                .push("tls: needs a private broker (skipped with --bootstrap)".into());
            return Ok(());
        }
        let dir = self.work_dir.join("tls");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let key_store = dir.join("server.pem");
        let ca = dir.join("ca.pem");
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .context("cannot make the tls scenario's certificate")?;
        let cert = certified.cert.pem();
        fs::write(&key_store, certified.signing_key.serialize_pem() + &cert)
            .with_context(|| format!("cannot write {}", key_store.display()))?;
        fs::write(&ca, &cert).with_context(|| format!("cannot write {}", ca.display()))?;
        let broker = LocalBroker::start_with_ssl(&dir, &self.args.broker_overrides, &key_store)?;
        let ssl_addr = broker
            .ssl_addr
            .context("the tls broker has no SSL listener")?;
        let plain = Clients::new(broker.addr.to_string(), self.args)?;
        let ssl = Clients::new(ssl_addr.to_string(), self.args)?
            .with_property("security.protocol", "SSL")
            .with_property("ssl.ca.location", &ca.display().to_string());
        plain.check_reachable()?;
        ssl.check_reachable()?;
        let stats = ProcessStats::new(broker.pid());
        tracing::info!("tls: plaintext");
        let (plaintext_produce, plaintext_consume) = self.tls_round(&plain, stats)?;
        tracing::info!("tls: SSL");
        let (ssl_produce, ssl_consume) = self.tls_round(&ssl, stats)?;
        self.report.tls = Some(Tls {
            produce_ratio: ssl_produce.mb_per_s / plaintext_produce.mb_per_s.max(1e-9),
            consume_ratio: ssl_consume.mb_per_s / plaintext_consume.mb_per_s.max(1e-9),
            plaintext_produce,
            ssl_produce,
            plaintext_consume,
            ssl_consume,
        });
        Ok(())
    }

    /// Produces --produce-bytes into a new topic through `clients`, then reads it all back.
    fn tls_round(
        &self,
        clients: &Clients,
        stats: ProcessStats,
    ) -> anyhow::Result<(Throughput, Throughput)> {
        let a = self.args;
        let topic = unique_name("strata-bench-tls");
        clients.create_topic(&topic, a.partitions)?;
        let records = (a.produce_bytes.0 / a.record_size.0).max(1);
        let load = ProducerLoad {
            config: clients.producer(a),
            topic: &topic,
            producers: a.producers,
            record_size: a.record_size.0 as usize,
            records,
            rate: None,
            stamp_epoch: None,
        };
        let (produced, usage) = metered_on(Some(stats), || load.run())?;
        let baseline = self.report.baseline.as_ref();
        let produce = Throughput::new(produced.transfer, usage, baseline);
        let marks = clients.watermarks(&topic, a.partitions)?;
        let load = ConsumerLoad {
            config: clients.consumer(),
            topic: &topic,
            consumers: a.consumers,
            start_offsets: marks.iter().map(|m| m.0).collect(),
            end_offsets: Arc::new(OnceLock::from(
                marks.iter().map(|m| m.1).collect::<Vec<_>>(),
            )),
            latency_epoch: None,
            idle_timeout: Duration::from_secs(30),
        };
        let (consumed, usage) = metered_on(Some(stats), || load.run())?;
        Ok((produce, Throughput::new(consumed.transfer, usage, baseline)))
    }
}
