//! The broker: network listener, Kafka API handlers and admin HTTP, wired over the log and
//! metadata crates.
//!
//! Request path: [`connection`] reads frames and decodes them with `strata-protocol`,
//! [`handlers`] answers each API from the metadata image ([`strata_meta`]) and the partition
//! logs held by the [`replica_manager`], and [`broker`] owns the parts and their lifecycle.

pub mod broker;
mod broker_client;
pub mod broker_lifecycle;
pub mod config;
mod connection;
pub mod controller_rpc;
pub mod controller_service;
pub mod fetch_session;
pub mod group_service;
pub mod handlers;
mod http;
mod internal_topics;
pub mod lifecycle;
mod log_cleaner;
pub mod metadata_changes;
pub mod metadata_source;
pub mod metrics;
pub mod remote_log;
mod replica_fetcher;
pub mod replica_manager;
pub mod replication;
pub mod sasl;
pub mod session;
mod task;
#[cfg(test)]
mod test_fixture;
pub mod tls;
pub mod txn_service;

pub use broker::Broker;
pub use config::ServerConfig;
pub use connection::BoundListener;
pub use lifecycle::StartError;

/// Binds every Kafka listener (building the TLS of SSL ones) and the HTTP listener, so that
/// the caller learns of a busy port or an unusable key store before anything else starts.
pub async fn bind(
    config: &ServerConfig,
) -> Result<(Vec<BoundListener>, tokio::net::TcpListener), StartError> {
    let mut kafka = Vec::new();
    for listener in &config.listeners {
        let tls = match listener.security_protocol {
            session::SecurityProtocol::Ssl => Some(tls::acceptor(config, &listener.name)?),
            _ => None,
        };
        let socket = tokio::net::TcpListener::bind(listener.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: listener.bind.to_string(),
                source,
            })?;
        kafka.push(BoundListener {
            config: listener.clone(),
            socket,
            tls,
        });
    }
    let http = http::bind(config.http)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.http.to_string(),
            source,
        })?;
    Ok((kafka, http))
}
