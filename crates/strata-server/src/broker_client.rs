//! A Kafka-protocol connection from this broker to another (follower fetches, transaction
//! markers): one request at a time, bounded frames.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
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
