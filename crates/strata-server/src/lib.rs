//! The broker: network listener, Kafka API handlers and admin HTTP, wired over the log and
//! metadata crates.
//!
//! Request path: [`connection`] reads frames and decodes them with `strata-protocol`,
//! [`handlers`] answers each API from the metadata image ([`strata_meta`]) and the partition
//! logs held by the [`replica_manager`], and [`broker`] owns the parts and their lifecycle.

mod audit_log;
pub mod broker;
mod broker_client;
pub mod broker_lifecycle;
pub mod client_quota_manager;
pub mod config;
mod connection;
pub mod controller_rpc;
pub mod controller_service;
pub mod fetch_session;
pub mod group_service;
pub mod handlers;
pub mod http;
mod internal_topics;
pub mod lifecycle;
mod log_cleaner;
pub mod metadata_changes;
pub mod metadata_source;
pub mod metrics;
pub mod oauth;
pub mod remote_log;
mod replica_fetcher;
pub mod replica_manager;
pub mod replication;
pub mod sasl;
pub mod session;
mod task;
pub mod tenant_metrics;
#[cfg(test)]
mod test_fixture;
pub mod tls;
pub mod txn_service;

pub use broker::Broker;
pub use config::ServerConfig;
pub use connection::BoundListener;
pub use lifecycle::StartError;

/// Binds every Kafka listener (building the TLS of SSL ones and the mechanisms of SASL ones)
/// and the HTTP listener, so that the caller learns of a busy port, an unusable key store or
/// an unserved mechanism before anything else starts.
pub async fn bind(
    config: &ServerConfig,
) -> Result<(Vec<BoundListener>, http::AdminListener), StartError> {
    let mut kafka = Vec::new();
    for listener in &config.listeners {
        let protocol = listener.security_protocol;
        let tls = match protocol {
            session::SecurityProtocol::Ssl | session::SecurityProtocol::SaslSsl => Some(
                std::sync::Arc::new(tls::TlsListener::new(config, &listener.name)?),
            ),
            _ => None,
        };
        let sasl = match protocol.is_sasl() {
            true => Some(sasl_listener(config, listener).await?),
            false => None,
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
            sasl,
        });
    }
    let http = http::bind(config).await?;
    Ok((kafka, http))
}

/// The SASL settings of SASL listener `listener`, from its (prefixed or plain) `sasl.*` and
/// the broker's connection settings.
async fn sasl_listener(
    config: &ServerConfig,
    listener: &config::ListenerConfig,
) -> Result<connection::SaslListener, StartError> {
    use strata_meta::config::props;
    let millis = |key: strata_meta::config::BrokerProperty<i64>| {
        std::time::Duration::from_millis(config.broker_value(key).max(0) as u64)
    };
    let reauth_after = millis(props::CONNECTIONS_MAX_REAUTH_MS);
    let max_receive: i64 =
        config.listener_value(&listener.name, props::SASL_SERVER_MAX_RECEIVE_SIZE);
    let mechanisms = sasl::listener_mechanisms(config, listener)?;
    let tokens = match mechanisms.contains(&sasl::SaslMechanism::OAuthBearer) {
        true => Some(std::sync::Arc::new(
            oauth::TokenValidator::load(config, &listener.name)
                .await
                .map_err(|e| config::ListenerError(format!("listener {}: {e}", listener.name)))?,
        )),
        false => None,
    };
    Ok(connection::SaslListener {
        mechanisms,
        tokens,
        max_receive_bytes: max_receive.max(1) as usize,
        reauth_after: (!reauth_after.is_zero()).then_some(reauth_after),
        failure_delay: millis(props::CONNECTION_FAILED_AUTHENTICATION_DELAY_MS),
    })
}
