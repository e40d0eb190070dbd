use super::*;

/// A self-signed certificate for `O=Strata, OU=eng\, test, CN=client` (made with `openssl req
/// -x509`; test data, its key is not kept).
const CLIENT_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBwjCCAWegAwIBAgIUf5o4kkzgCP4JZym2kyk2FRJAMxMwCgYIKoZIzj0EAwIw
NjEPMA0GA1UECgwGU3RyYXRhMRIwEAYDVQQLDAllbmcsIHRlc3QxDzANBgNVBAMM
BmNsaWVudDAeFw0yNjEyMDcwNTUyMzRaFw0zNjEyMDQwNTUyMzRaMDYxDzANBgNV
BAoMBlN0cmF0YTESMBAGA1UECwwJZW5nLCB0ZXN0MQ8wDQYDVQQDDAZjbGllbnQw
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAS+TiBnPZM8IqUk42ffsJQD00Q0EUWc
ot76sUegHHvfn3GeMc6UoyliT7ljdId1AhTYZ1Tz+kencIk3RWr4DzSOo1MwUTAd
BgNVHQ4EFgQUzzghhxkjM4jyRfPxrO+fECzbxnQwHwYDVR0jBBgwFoAUzzghhxkj
M4jyRfPxrO+fECzbxnQwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBG
AiEAlcgjTfAySG6u3sDExUVjn53hGr7ogdxycE5auO2NkYECIQDLa8LmdHXqUZ8r
M9xRf2rwMSi+ru2KosjRdaVGrnR6ZQ==
-----END CERTIFICATE-----
";

#[test]
fn principal_is_the_subject_dn_in_rfc_2253_form() {
    let certs = certificates(CLIENT_CERT.as_bytes()).expect("PEM");
    // What `openssl x509 -subject -nameopt RFC2253` and Java's X500Principal print.
    assert_eq!(
        subject_dn(&certs[0]).as_deref(),
        Some("CN=client,OU=eng\\, test,O=Strata")
    );
    let principal = |certs| {
        let config = crate::test_fixture::config(std::path::Path::new("/nonexistent"), &[]);
        let mapper = PrincipalMapper::parse(
            &config.listener_value("SSL", props::SSL_PRINCIPAL_MAPPING_RULES),
        )
        .expect("the default rules");
        principal_of(&mapper, certs)
    };
    assert_eq!(
        principal(Some(&certs)).expect("readable").to_string(),
        "User:CN=client,OU=eng\\, test,O=Strata"
    );
    assert_eq!(principal(None), Ok(KafkaPrincipal::anonymous()));
    assert_eq!(principal(Some(&[])), Ok(KafkaPrincipal::anonymous()));
}

#[test]
fn a_malformed_certificate_has_no_subject() {
    let certs = certificates(CLIENT_CERT.as_bytes()).expect("PEM");
    let der: &[u8] = &certs[0];
    for cut in [0, 1, 2, 10, 60, der.len() - 1] {
        assert_eq!(subject_dn(&der[..cut]), None, "cut at {cut}");
    }
    assert_eq!(subject_dn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
}

#[test]
fn one_line_pem_gets_its_line_breaks_back() {
    let one_line = CLIENT_CERT.replace('\n', " ");
    let certs = certificates(one_line.as_bytes()).expect("PEM from one line");
    assert_eq!(certs.len(), 1);
    assert_eq!(pem_newlines(CLIENT_CERT), CLIENT_CERT);
}

#[test]
fn cipher_suites_are_named_as_iana_and_kafka_name_them() {
    let names: Vec<String> = rustls::crypto::aws_lc_rs::default_provider()
        .cipher_suites
        .iter()
        .map(iana_name)
        .collect();
    for name in [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
}

/// Whether a client built by [`client_config`] from `client_settings` completes a handshake
/// with a server for `server_name` of `pki` when it dials `dialled`.
async fn handshake(
    pki: &crate::test_fixture::TestPki,
    client_settings: &[(&str, &str)],
    dialled: &str,
) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_path = dir.path().join("server.pem");
    std::fs::write(&server_path, &pki.server).expect("write");
    let server_config = server_config(
        &crate::test_fixture::config(
            dir.path(),
            &[
                ("ssl.keystore.type", "PEM"),
                (
                    "ssl.keystore.location",
                    server_path.to_str().expect("UTF-8"),
                ),
            ],
        ),
        "SSL",
    )
    .expect("server");
    let client_config = client_config(
        &crate::test_fixture::config(dir.path(), client_settings),
        "SSL",
    )
    .expect("client");
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move { acceptor.accept(server_io).await.is_ok() });
    let name = rustls::pki_types::ServerName::try_from(dialled.to_string()).expect("name");
    let connected = tokio_rustls::TlsConnector::from(Arc::new(client_config))
        .connect(name, client_io)
        .await
        .is_ok();
    let _ = server.await;
    connected
}

#[tokio::test]
async fn without_endpoint_identification_only_the_chain_is_checked() {
    let pki = crate::test_fixture::TestPki::new("broker-1.example");
    let inline_ca = pki.ca.replace('\n', " ");
    let trusting = |algorithm| {
        vec![
            ("ssl.truststore.type", "PEM"),
            ("ssl.truststore.certificates", inline_ca.as_str()),
            ("ssl.endpoint.identification.algorithm", algorithm),
        ]
    };
    assert!(handshake(&pki, &trusting("https"), "broker-1.example").await);
    assert!(!handshake(&pki, &trusting("https"), "broker-2.example").await);
    assert!(handshake(&pki, &trusting(""), "broker-2.example").await);
    // The chain still counts: a certificate of another CA is refused.
    let stranger = crate::test_fixture::TestPki::new("broker-1.example");
    assert!(!handshake(&stranger, &trusting(""), "broker-1.example").await);
}

#[test]
fn a_reloading_configuration_follows_its_files_and_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store.pem");
    let write = |text: &str| std::fs::write(&store, text).expect("write the store");
    write("a");
    let config = crate::test_fixture::config(
        dir.path(),
        &[("ssl.keystore.location", store.to_str().expect("utf-8"))],
    );
    // The "configuration" is the store's text; "bad" stands for a file that does not build.
    let reloading = Reloading::new(&config, "SSL", |config, listener| {
        let path = config.listener_value(listener, props::SSL_KEYSTORE_LOCATION);
        let text = std::fs::read_to_string(path).expect("read the store");
        match text.as_str() {
            "bad" => Err(TlsConfigError::Invalid {
                listener: listener.to_string(),
                message: "bad".into(),
            }),
            _ => Ok(text),
        }
    })
    .expect("builds");
    let after_the_check_interval = || std::thread::sleep(RELOAD_CHECK_INTERVAL * 11 / 10);
    assert_eq!(reloading.current(), "a");
    write("bb");
    assert_eq!(reloading.current(), "a", "looked at once per interval");
    after_the_check_interval();
    assert_eq!(reloading.current(), "bb");
    write("bad");
    after_the_check_interval();
    assert_eq!(reloading.current(), "bb", "the last good one is kept");
    write("ccc");
    after_the_check_interval();
    assert_eq!(reloading.current(), "ccc");
}
