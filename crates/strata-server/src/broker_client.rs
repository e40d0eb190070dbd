//! A Kafka-protocol connection from this broker to another (follower fetches, transaction
//! markers, transactional write checks): one request at a time, bounded frames; and the pool
//! of such connections that markers and checks share ([`BrokerPool`]).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use strata_durable::LockExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A response frame larger than this is refused (fetches ask for far less).
const MAX_FRAME_BYTES: usize = 128 * 1024 * 1024;

pub struct BrokerConnection {
    stream: TcpStream,
    correlation_id: i32,
    client_id: &'static str,
}

impl BrokerConnection {
    pub async fn connect(address: &str, client_id: &'static str) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        Ok(BrokerConnection {
            stream,
            correlation_id: 0,
            client_id,
        })
    }

    /// Sends `request` as `api_key` at `version` and reads its response. After an error the
    /// connection is in an unknown state: drop it.
    pub async fn send<Req, Resp>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> anyhow::Result<Resp>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut body = BytesMut::new();
        header.encode(&mut body, Req::header_version(version))?;
        request.encode(&mut body, version)?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_u32(body.len() as u32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await?;
        let size = self.stream.read_u32().await? as usize;
        anyhow::ensure!(size <= MAX_FRAME_BYTES, "response frame of {size} bytes");
        let mut buf = vec![0u8; size];
        self.stream.read_exact(&mut buf).await?;
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, Resp::header_version(version))?;
        anyhow::ensure!(
            header.correlation_id == self.correlation_id,
            "response to request {} while waiting for {}",
            header.correlation_id,
            self.correlation_id
        );
        Resp::decode(&mut buf, version)
    }
}

/// Idle connections kept per destination broker. A transaction's checks and markers are
/// requests of a few hundred bytes, one at a time per connection; up to this many go on in
/// parallel to one broker without a new TCP connection.
pub const MAX_IDLE_PER_BROKER: usize = 4;

/// Connections to other brokers for the transaction coordinator's WriteTxnMarkers and the
/// partition leaders' AddPartitionsToTxn checks (KIP-890), reused across calls instead of one
/// TCP connection (and its accept, task and buffers on the other side) per call.
///
/// Each destination ("host:port") keeps at most [`MAX_IDLE_PER_BROKER`] idle connections; a
/// call takes one (or connects), sends one request, and gives it back only if the exchange
/// completed, so a connection in an unknown state (an error, or a call dropped by its
/// timeout) is never reused. The destinations are the cluster's brokers, so the pool holds
/// at most `MAX_IDLE_PER_BROKER` × brokers connections. Only for idempotent requests: a
/// request that failed on a pooled connection (the other broker may have closed it while
/// idle) is sent again once on a new one.
pub struct BrokerPool {
    client_id: &'static str,
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<BrokerConnection>>>,
}

impl BrokerPool {
    pub fn new(client_id: &'static str) -> Self {
        BrokerPool {
            client_id,
            idle: Default::default(),
        }
    }

    /// Sends `request` to the broker at `address` and reads its response, on a pooled
    /// connection if there is one. Counts new connections and reuses in `metrics`.
    pub async fn send<Req, Resp>(
        &self,
        metrics: &crate::metrics::Metrics,
        address: &str,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> anyhow::Result<Resp>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        if let Some(mut conn) = self.take(address) {
            match conn.send(api_key, version, request).await {
                Ok(response) => {
                    metrics.broker_client_reuses.add(1);
                    self.give_back(address, conn);
                    return Ok(response);
                }
                Err(e) => {
                    tracing::debug!(%address, error = %e, "pooled broker connection failed; reconnecting");
                }
            }
        }
        let mut conn = BrokerConnection::connect(address, self.client_id).await?;
        metrics.broker_client_connects.add(1);
        let response = conn.send(api_key, version, request).await?;
        self.give_back(address, conn);
        Ok(response)
    }

    fn take(&self, address: &str) -> Option<BrokerConnection> {
        self.idle.locked().get_mut(address).and_then(Vec::pop)
    }

    fn give_back(&self, address: &str, conn: BrokerConnection) {
        let mut idle = self.idle.locked();
        let pooled = idle.entry(address.to_string()).or_default();
        if pooled.len() < MAX_IDLE_PER_BROKER {
            pooled.push(conn);
        }
        debug_assert!(pooled.len() <= MAX_IDLE_PER_BROKER);
    }

    /// Idle connections to `address` (for tests and metrics).
    pub fn idle_to(&self, address: &str) -> usize {
        self.idle.locked().get(address).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// A broker that answers WriteTxnMarkers v1 with an empty response; it closes each
    /// connection after `answers_per_connection` answers. Returns its address and the count of
    /// connections it accepted.
    async fn fake_broker(answers_per_connection: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    for _ in 0..answers_per_connection {
                        let Ok(size) = stream.read_u32().await else {
                            return;
                        };
                        let mut frame = vec![0u8; size as usize];
                        if stream.read_exact(&mut frame).await.is_err() {
                            return;
                        }
                        let mut frame = Bytes::from(frame);
                        let header = RequestHeader::decode(
                            &mut frame,
                            WriteTxnMarkersRequest::header_version(1),
                        )
                        .expect("request header");
                        let mut body = BytesMut::new();
                        ResponseHeader::default()
                            .with_correlation_id(header.correlation_id)
                            .encode(&mut body, WriteTxnMarkersResponse::header_version(1))
                            .expect("response header");
                        WriteTxnMarkersResponse::default()
                            .encode(&mut body, 1)
                            .expect("response");
                        let mut out = BytesMut::new();
                        out.put_u32(body.len() as u32);
                        out.extend_from_slice(&body);
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    async fn send(pool: &BrokerPool, metrics: &crate::metrics::Metrics, address: &str) {
        let _: WriteTxnMarkersResponse = pool
            .send(
                metrics,
                address,
                ApiKey::WriteTxnMarkers,
                1,
                &WriteTxnMarkersRequest::default(),
            )
            .await
            .expect("answered");
    }

    #[tokio::test]
    async fn calls_reuse_a_connection_and_survive_one_the_peer_closed() {
        let metrics = crate::metrics::Metrics::default();
        let pool = BrokerPool::new("test");
        let (address, accepted) = fake_broker(usize::MAX).await;
        for _ in 0..5 {
            send(&pool, &metrics, &address).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for sequential calls"
        );
        assert_eq!(pool.idle_to(&address), 1);
        assert_eq!(
            (
                metrics.broker_client_connects.get(),
                metrics.broker_client_reuses.get()
            ),
            (1, 4)
        );
        // Concurrent calls open more connections, of which the pool keeps a bounded number.
        let (pool, metrics) = (Arc::new(pool), Arc::new(metrics));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..MAX_IDLE_PER_BROKER + 3 {
            let (pool, metrics, address) = (pool.clone(), metrics.clone(), address.clone());
            calls.spawn(async move { send(&pool, &metrics, &address).await });
        }
        while let Some(done) = calls.join_next().await {
            done.expect("call");
        }
        assert!(pool.idle_to(&address) <= MAX_IDLE_PER_BROKER);

        // A peer that closes its connections after each answer: the pooled one fails, and the
        // call goes through on a new one.
        let pool = BrokerPool::new("test");
        let (address, accepted) = fake_broker(1).await;
        send(&pool, &metrics, &address).await;
        send(&pool, &metrics, &address).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
