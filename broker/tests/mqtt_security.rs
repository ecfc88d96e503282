//! "Only the vehicle speaks for itself": authentication, role-based topic rules, TLS with
//! client certificates, rate limits and hostile clients, against the real MQTT front on
//! free local ports.
//!
//! Hostile clients speak raw MQTT over TCP (a few bytes each), so hundreds of them cost
//! little; well-behaved ones use rumqttc. Certificates come from a CA generated per test
//! run (rcgen) into a temporary directory: no key is committed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use fleet_broker::mqtt::acl::{PublishDenied, Role, SubscribeDenied};
use fleet_broker::mqtt::auth::{AuthMode, AuthOptions, AuthRefused, ObserverUser};
use fleet_broker::mqtt::limits::Limits;
use fleet_broker::mqtt::secret::{mint_secret, vehicle_password, Secret, SecretHash};
use fleet_broker::mqtt::{MqttFront, MqttOptions, MqttStats, TlsOptions, Uplink};
use rumqttc::{
    ConnectReturnCode, Packet, QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

mod support;

use support::{spawn_client, Client, WAIT};
const OPS_PASSWORD: &str = "correct horse battery staple";

fn fleet_key() -> Secret {
    Secret::new(b"test-only fleet key: 32 bytes or more".to_vec())
}

fn ops_user() -> ObserverUser {
    ObserverUser {
        name: "ops".to_owned(),
        password: SecretHash::compute(OPS_PASSWORD.as_bytes(), b"test-salt", 10),
        role: Role::Observer,
    }
}

fn hmac_options() -> MqttOptions {
    MqttOptions {
        auth: AuthOptions {
            mode: AuthMode::Hmac {
                fleet_key: fleet_key(),
            },
            users: vec![ops_user()],
        },
        ..MqttOptions::default()
    }
}

async fn start(opts: MqttOptions) -> (MqttFront, mpsc::Receiver<Uplink>) {
    let (tx, rx) = mpsc::channel(4096);
    let opts = MqttOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..opts
    };
    let front = timeout(WAIT, MqttFront::start(opts, tx))
        .await
        .expect("start timed out")
        .expect("front starts");
    (front, rx)
}

// ---------------------------------------------------------------- rumqttc clients

fn options(addr: SocketAddr, id: &str, login: Option<(&str, &str)>) -> rumqttc::MqttOptions {
    let mut opts = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    opts
}

impl Client {
    async fn connection_error(&mut self) -> String {
        let wait = async {
            loop {
                match self.packets.recv().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e,
                    None => panic!("event loop gone without an error"),
                }
            }
        };
        timeout(WAIT, wait)
            .await
            .expect("timed out waiting for the connection to end")
    }

    async fn publish(&self, topic: &str, payload: &'static [u8]) {
        timeout(
            WAIT,
            self.mqtt.publish(topic, QoS::AtLeastOnce, false, payload),
        )
        .await
        .expect("publish request timed out")
        .expect("publish request queued");
    }

    async fn subscribe(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
        timeout(WAIT, self.mqtt.subscribe_many(filters))
            .await
            .expect("subscribe request timed out")
            .expect("subscribe request queued");
        self.expect("a SUBACK", |p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    async fn expect_publish(&mut self) -> rumqttc::Publish {
        self.expect("a PUBLISH", |p| match p {
            Packet::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .await
    }
}

async fn connect(opts: rumqttc::MqttOptions) -> Client {
    let mut client = spawn_client(opts);
    let code = client
        .expect("a CONNACK", |p| match p {
            Packet::ConnAck(ack) => Some(ack.code),
            _ => None,
        })
        .await;
    assert_eq!(code, ConnectReturnCode::Success);
    client
}

/// The connection error of a client whose CONNECT is refused.
async fn refused(opts: rumqttc::MqttOptions) -> String {
    spawn_client(opts).connection_error().await
}

async fn vehicle(front: &MqttFront, id: &str) -> Client {
    let password = vehicle_password(&fleet_key(), id);
    connect(options(front.local_addr(), id, Some((id, &password)))).await
}

async fn next_uplink(rx: &mut mpsc::Receiver<Uplink>) -> Uplink {
    timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for an uplink")
        .expect("uplink channel open")
}

async fn wait_for_stats(front: &MqttFront, what: &str, cond: impl Fn(&MqttStats) -> bool) {
    let wait = async {
        while !cond(&front.stats()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if timeout(WAIT, wait).await.is_err() {
        panic!("timed out waiting for {what}; stats: {:?}", front.stats());
    }
}

const OK: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);
const NO: SubscribeReasonCode = SubscribeReasonCode::Failure;

// ---------------------------------------------------------------- raw MQTT 3.1.1

fn mqtt_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

/// A CONNECT packet (MQTT 3.1.1, clean session, keep-alive 60 s).
fn connect_packet(client_id: &str, login: Login<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.push(4);
    body.push(0x02 | if login.is_some() { 0xC0 } else { 0 });
    body.extend_from_slice(&60u16.to_be_bytes());
    mqtt_string(&mut body, client_id.as_bytes());
    if let Some((user, password)) = login {
        mqtt_string(&mut body, user.as_bytes());
        mqtt_string(&mut body, password);
    }
    let mut packet = vec![0x10];
    remaining_length(&mut packet, body.len());
    packet.extend(body);
    packet
}

/// A QoS 0 PUBLISH packet.
fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string(&mut body, topic.as_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x30];
    remaining_length(&mut packet, body.len());
    packet.extend(body);
    packet
}

/// Connects over raw TCP; returns the CONNACK return code and the stream.
async fn raw_connect(addr: SocketAddr, packet: &[u8]) -> (u8, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    stream.write_all(packet).await.expect("send CONNECT");
    let mut ack = [0u8; 4];
    timeout(WAIT, stream.read_exact(&mut ack))
        .await
        .expect("CONNACK in time")
        .expect("read CONNACK");
    assert_eq!(ack[0], 0x20, "CONNACK expected, got {ack:?}");
    (ack[3], stream)
}

/// Waits until the peer closes `stream` (reads until EOF or error).
async fn closed_by_peer(mut stream: TcpStream) {
    let mut buf = [0u8; 256];
    timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the broker closes the connection in time");
}

/// Username and password of a raw CONNECT.
type Login<'a> = Option<(&'a str, &'a [u8])>;

const CONNACK_BAD_CREDENTIALS: u8 = 4;
const CONNACK_NOT_AUTHORIZED: u8 = 5;

// ---------------------------------------------------------------- spoofing

#[tokio::test]
async fn with_auth_on_a_vehicle_with_valid_credentials_for_v1_cannot_publish_for_v2() {
    let (front, mut rx) = start(hmac_options()).await;
    let v1 = vehicle(&front, "v1").await;

    v1.publish("vehicles/v2/heartbeat", b"forged").await;
    v1.publish("vehicles/v2/error", b"forged").await;
    v1.publish("vehicles/v2/command", b"forged").await;
    v1.publish("vehicles/v1/heartbeat", b"own").await;

    assert_eq!(
        next_uplink(&mut rx).await.payload,
        Bytes::from_static(b"own"),
        "the forged uplinks must not arrive"
    );
    let stats = front.stats();
    assert_eq!(stats.publishes_denied_for(PublishDenied::OtherVehicle), 2);
    assert_eq!(stats.publishes_denied_for(PublishDenied::BrokerOnly), 1);
    front.shutdown().await;
}

#[tokio::test]
async fn with_auth_on_nobody_connects_as_v2_without_v2s_credentials() {
    let (front, _rx) = start(hmac_options()).await;
    let addr = front.local_addr();
    let v1_password = vehicle_password(&fleet_key(), "v1");
    let v1 = v1_password.as_bytes();

    let cases: [(&str, Login<'_>, u8); 6] = [
        // v1's password for v2
        ("v2", Some(("v2", v1)), CONNACK_BAD_CREDENTIALS),
        // v1's login, v2's client id
        ("v2", Some(("v1", v1)), CONNACK_NOT_AUTHORIZED),
        // no login at all
        ("v2", None, CONNACK_BAD_CREDENTIALS),
        ("v2", Some(("v2", b"")), CONNACK_BAD_CREDENTIALS),
        ("v2", Some(("v2", b"0000")), CONNACK_BAD_CREDENTIALS),
        // the observer's login, a vehicle's client id
        (
            "v2",
            Some(("ops", OPS_PASSWORD.as_bytes())),
            CONNACK_NOT_AUTHORIZED,
        ),
    ];
    for (client_id, login, expected) in cases {
        let (code, _) = raw_connect(addr, &connect_packet(client_id, login)).await;
        assert_eq!(code, expected, "{client_id} {login:?}");
    }
    let stats = front.stats();
    assert_eq!(stats.connects_refused_auth_for(AuthRefused::BadPassword), 3);
    assert_eq!(
        stats.connects_refused_auth_for(AuthRefused::UsernameNotClientId),
        1
    );
    assert_eq!(stats.connects_refused_auth_for(AuthRefused::NoUsername), 1);
    assert_eq!(
        stats.connects_refused_auth_for(AuthRefused::ObserverClientId),
        1
    );
    assert_eq!(stats.connected_clients, 0);

    // The real v2 gets in.
    vehicle(&front, "v2").await;
    front.shutdown().await;
}

#[tokio::test]
async fn with_auth_on_an_observer_user_reads_fleet_and_service_topics_and_cannot_publish() {
    let (front, mut rx) = start(hmac_options()).await;
    let addr = front.local_addr();
    let mut ops = connect(options(addr, "ops:dashboard", Some(("ops", OPS_PASSWORD)))).await;

    let codes = ops
        .subscribe(&[
            "fleet/#",
            "vehicles/+/service",
            "vehicles/v1/command",
            "vehicles/+/heartbeat",
            "#",
        ])
        .await;
    assert_eq!(codes, vec![OK, OK, NO, NO, NO]);

    for topic in [
        "vehicles/ops/heartbeat",
        "vehicles/v1/heartbeat",
        "vehicles/v1/error",
        "vehicles/v1/ack",
        "vehicles/v1/service",
        "fleet/sli",
    ] {
        ops.publish(topic, b"forged").await;
    }
    wait_for_stats(&front, "6 denied publishes", |s| s.publishes_denied == 6).await;
    let stats = front.stats();
    assert_eq!(stats.publishes_denied_for(PublishDenied::ReadOnly), 4);
    assert_eq!(stats.publishes_denied_for(PublishDenied::BrokerOnly), 2);
    assert!(rx.try_recv().is_err(), "no observer publish reaches ingest");

    front
        .publish(
            "vehicles/v7/service",
            Bytes::from_static(b"state"),
            true,
            false,
        )
        .await
        .expect("publish state");
    assert_eq!(ops.expect_publish().await.topic, "vehicles/v7/service");
    front.shutdown().await;
}

#[tokio::test]
async fn with_auth_on_a_vehicle_reads_only_its_own_command_and_service_topics() {
    let (front, _rx) = start(hmac_options()).await;
    let mut v1 = vehicle(&front, "v1").await;
    let codes = v1
        .subscribe(&[
            "vehicles/v1/command",
            "vehicles/v1/service",
            "#",
            "vehicles/+/service",
            "vehicles/+/command",
            "vehicles/v2/service",
            "vehicles/v2/command",
            "fleet/#",
            "fleet/events",
        ])
        .await;
    assert_eq!(codes, vec![OK, OK, NO, NO, NO, NO, NO, NO, NO]);
    let stats = front.stats();
    assert_eq!(stats.subscribes_denied_for(SubscribeDenied::TooBroad), 3);
    assert_eq!(
        stats.subscribes_denied_for(SubscribeDenied::OtherVehicle),
        2
    );
    assert_eq!(
        stats.subscribes_denied_for(SubscribeDenied::ObserversOnly),
        2
    );
    front.shutdown().await;
}

#[tokio::test]
async fn with_auth_off_anyone_still_reads_the_observer_topics_as_documented() {
    let (front, _rx) = start(MqttOptions::default()).await;
    let mut dashboard = connect(options(front.local_addr(), "dashboard", None)).await;
    let codes = dashboard
        .subscribe(&["fleet/#", "vehicles/+/service", "vehicles/+/command"])
        .await;
    assert_eq!(codes, vec![OK, OK, NO]);
    front.shutdown().await;
}

#[tokio::test]
async fn the_credentials_file_admits_a_listed_vehicle_with_its_minted_secret_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (secret, hash) = mint_secret().expect("random");
    let (other_secret, _) = mint_secret().expect("random");
    let path = dir.path().join("vehicles.credentials");
    std::fs::write(&path, format!("# test fleet\nv1:{hash}\n")).expect("write credentials");
    let (front, _rx) = start(MqttOptions {
        auth: AuthOptions {
            mode: AuthMode::File {
                credentials_file: path,
            },
            users: Vec::new(),
        },
        ..MqttOptions::default()
    })
    .await;
    let addr = front.local_addr();

    connect(options(addr, "v1", Some(("v1", &secret)))).await;
    let (code, _) = raw_connect(
        addr,
        &connect_packet("v1", Some(("v1", other_secret.as_bytes()))),
    )
    .await;
    assert_eq!(code, CONNACK_BAD_CREDENTIALS);
    let (code, _) = raw_connect(addr, &connect_packet("v2", Some(("v2", secret.as_bytes())))).await;
    assert_eq!(code, CONNACK_BAD_CREDENTIALS);
    front.shutdown().await;
}

#[tokio::test]
async fn a_bad_credentials_file_stops_the_start_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vehicles.credentials");
    std::fs::write(&path, "v1:plaintext-password\n").expect("write credentials");
    let (tx, _rx) = mpsc::channel(1);
    let opts = MqttOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        auth: AuthOptions {
            mode: AuthMode::File {
                credentials_file: path,
            },
            users: Vec::new(),
        },
        ..MqttOptions::default()
    };
    let err = MqttFront::start(opts, tx).await.expect_err("refused");
    assert!(err.to_string().contains("line 1"), "{err}");
    assert!(!err.to_string().contains("plaintext-password"), "{err}");
}

// ---------------------------------------------------------------- clones

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over_and_is_counted_as_a_possible_clone()
{
    let (front, mut rx) = start(hmac_options()).await;
    let mut first = vehicle(&front, "v1").await;
    let second = vehicle(&front, "v1").await;

    let error = first.connection_error().await;
    assert!(!error.is_empty());
    assert_eq!(front.stats().clone_takeovers, 1);
    second
        .publish("vehicles/v1/heartbeat", b"from the newer")
        .await;
    assert_eq!(
        next_uplink(&mut rx).await.payload,
        Bytes::from_static(b"from the newer")
    );
    front.shutdown().await;
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn a_flooding_vehicle_is_rate_limited_counted_and_finally_disconnected() {
    let (front, mut rx) = start(MqttOptions {
        limits: Limits {
            publish_rate: 1.0,
            publish_burst: 5,
            disconnect_after: 50,
            ..Limits::default()
        },
        ..MqttOptions::default()
    })
    .await;
    let (code, mut flood) = raw_connect(front.local_addr(), &connect_packet("v1", None)).await;
    assert_eq!(code, 0);
    let mut packets = Vec::new();
    for _ in 0..100 {
        packets.extend(publish_packet("vehicles/v1/heartbeat", b"{not json"));
    }
    // The broker may close the socket before reading everything.
    let _ = flood.write_all(&packets).await;
    closed_by_peer(flood).await;

    wait_for_stats(&front, "the flooder to be disconnected", |s| {
        s.flooders_disconnected == 1
    })
    .await;
    let stats = front.stats();
    assert!(stats.publishes_rate_limited >= 50, "{stats:?}");
    let mut forwarded = 0;
    while rx.try_recv().is_ok() {
        forwarded += 1;
    }
    assert!(
        (5..=7).contains(&forwarded),
        "only the burst (and what refilled) reaches ingest: {forwarded}"
    );
    front.shutdown().await;
}

#[tokio::test]
async fn connects_beyond_the_connect_rate_are_refused_and_counted() {
    let (front, _rx) = start(MqttOptions {
        limits: Limits {
            connect_rate: 0.001,
            connect_burst: 3,
            ..Limits::default()
        },
        ..MqttOptions::default()
    })
    .await;
    let addr = front.local_addr();
    let mut codes = Vec::new();
    for i in 0..5 {
        let (code, _) = raw_connect(addr, &connect_packet(&format!("v{i}"), None)).await;
        codes.push(code);
    }
    assert_eq!(codes, vec![0, 0, 0, 5, 5]);
    assert_eq!(front.stats().connects_refused_rate, 2);
    front.shutdown().await;
}

// ---------------------------------------------------------------- hostile clients

#[tokio::test]
async fn connections_that_never_send_connect_are_closed_and_do_not_hold_up_others() {
    let (front, mut rx) = start(MqttOptions {
        handshake_timeout: Duration::from_millis(500),
        ..hmac_options()
    })
    .await;
    let addr = front.local_addr();
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(addr).await.expect("tcp connect"));
    }
    // A real vehicle gets in and is heard while 200 sockets sit idle.
    let v1 = vehicle(&front, "v1").await;
    v1.publish("vehicles/v1/heartbeat", b"{}").await;
    assert_eq!(next_uplink(&mut rx).await.client_id, "v1");
    for stream in silent {
        closed_by_peer(stream).await;
    }
    front.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_storm_is_refused_and_counted_while_a_real_vehicle_gets_in() {
    let (front, mut rx) = start(hmac_options()).await;
    let addr = front.local_addr();
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..300 {
        storm.spawn(async move {
            let id = format!("v{}", i % 10);
            let (code, _) =
                raw_connect(addr, &connect_packet(&id, Some((&id, b"not-the-password")))).await;
            code
        });
    }
    let v1 = vehicle(&front, "v1").await;
    v1.publish("vehicles/v1/heartbeat", b"{}").await;
    assert_eq!(next_uplink(&mut rx).await.client_id, "v1");
    while let Some(code) = storm.join_next().await {
        assert_eq!(code.expect("storm task"), CONNACK_BAD_CREDENTIALS);
    }
    assert_eq!(
        front
            .stats()
            .connects_refused_auth_for(AuthRefused::BadPassword),
        300
    );
    front.shutdown().await;
}

// ---------------------------------------------------------------- TLS

/// A CA, a server certificate for 127.0.0.1 and client certificates, written as PEM
/// files into a temporary directory that lives as long as this value.
struct TestPki {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl TestPki {
    fn new(name: &str) -> TestPki {
        // Several providers are compiled in; the first test to get here picks aws-lc-rs.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA cert");
        let ca_pem = cert.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write CA");
        TestPki {
            dir,
            ca: rcgen::Issuer::new(params, key),
            ca_pem,
        }
    }

    /// (certificate PEM, key PEM) signed by this CA.
    fn issue(&self, common_name: &str, server: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let sans = if server {
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
        } else {
            Vec::new()
        };
        let mut params = rcgen::CertificateParams::new(sans).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls_options(&self, require_client_cert: bool) -> TlsOptions {
        let (cert, key) = self.issue("fleet-broker", true);
        std::fs::write(self.path("server.pem"), cert).expect("write cert");
        std::fs::write(self.path("server.key"), key).expect("write key");
        TlsOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: require_client_cert.then(|| self.path("ca.pem")),
            require_client_cert,
            plain_tcp: true,
        }
    }
}

fn tls_client(
    front: &MqttFront,
    pki: &TestPki,
    id: &str,
    login: Option<(&str, &str)>,
    client_cert: Option<(String, String)>,
) -> rumqttc::MqttOptions {
    let addr = front.tls_addr().expect("TLS listener");
    let mut opts = options(addr, id, login);
    opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: pki.ca_pem.clone().into_bytes(),
        alpn: None,
        client_auth: client_cert.map(|(c, k)| (c.into_bytes(), k.into_bytes())),
    }));
    opts
}

#[tokio::test]
async fn a_vehicle_connects_over_tls_with_its_password_beside_plain_tcp() {
    let pki = TestPki::new("server-only");
    let (front, mut rx) = start(MqttOptions {
        tls: Some(pki.tls_options(false)),
        ..hmac_options()
    })
    .await;
    let password = vehicle_password(&fleet_key(), "v1");
    let v1 = connect(tls_client(
        &front,
        &pki,
        "v1",
        Some(("v1", &password)),
        None,
    ))
    .await;
    v1.publish("vehicles/v1/heartbeat", b"over tls").await;
    assert_eq!(
        next_uplink(&mut rx).await.payload,
        Bytes::from_static(b"over tls")
    );
    // Plain TCP still serves beside TLS.
    vehicle(&front, "v2").await;
    // Without the password TLS proves nothing about the vehicle.
    let error = refused(tls_client(&front, &pki, "v3", None, None)).await;
    assert!(error.contains("BadUserNamePassword"), "{error}");
    front.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_naming_the_vehicle_replaces_the_password_and_cannot_act_for_another()
{
    let pki = TestPki::new("mtls");
    let (front, mut rx) = start(MqttOptions {
        tls: Some(pki.tls_options(true)),
        ..hmac_options()
    })
    .await;
    let v1_cert = pki.issue("v1", false);

    let v1 = connect(tls_client(&front, &pki, "v1", None, Some(v1_cert.clone()))).await;
    v1.publish("vehicles/v2/heartbeat", b"forged").await;
    v1.publish("vehicles/v1/heartbeat", b"own").await;
    assert_eq!(
        next_uplink(&mut rx).await.payload,
        Bytes::from_static(b"own")
    );

    // v1's certificate cannot connect as v2, with or without v2 as username.
    let error = refused(tls_client(&front, &pki, "v2", None, Some(v1_cert.clone()))).await;
    assert!(error.contains("NotAuthorized"), "{error}");
    let error = refused(tls_client(
        &front,
        &pki,
        "v2",
        Some(("v2", "x")),
        Some(v1_cert),
    ))
    .await;
    assert!(error.contains("NotAuthorized"), "{error}");
    assert_eq!(
        front
            .stats()
            .connects_refused_auth_for(AuthRefused::CertMismatch),
        2
    );
    front.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_or_none_fails_the_tls_handshake() {
    let pki = TestPki::new("fleet");
    let rogue = TestPki::new("rogue");
    let (front, _rx) = start(MqttOptions {
        tls: Some(pki.tls_options(true)),
        ..hmac_options()
    })
    .await;
    let rogue_cert = rogue.issue("v1", false);
    let error = refused(tls_client(&front, &pki, "v1", None, Some(rogue_cert))).await;
    assert!(error.contains("Tls") || error.contains("Io"), "{error}");
    let password = vehicle_password(&fleet_key(), "v1");
    let error = refused(tls_client(
        &front,
        &pki,
        "v1",
        Some(("v1", &password)),
        None,
    ))
    .await;
    assert!(error.contains("Tls") || error.contains("Io"), "{error}");
    assert_eq!(front.stats().connected_clients, 0);
    front.shutdown().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_times_out_without_holding_up_other_clients() {
    let pki = TestPki::new("slow");
    let (front, mut rx) = start(MqttOptions {
        tls: Some(pki.tls_options(false)),
        handshake_timeout: Duration::from_millis(500),
        ..hmac_options()
    })
    .await;
    let tls_addr = front.tls_addr().expect("TLS listener");
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(tls_addr).await.expect("tcp connect");
        // Half a ClientHello record header, then nothing.
        s.write_all(&[0x16, 0x03]).await.expect("write");
        stalled.push(s);
    }
    let password = vehicle_password(&fleet_key(), "v1");
    let v1 = connect(tls_client(
        &front,
        &pki,
        "v1",
        Some(("v1", &password)),
        None,
    ))
    .await;
    v1.publish("vehicles/v1/heartbeat", b"{}").await;
    assert_eq!(next_uplink(&mut rx).await.client_id, "v1");
    for s in stalled {
        closed_by_peer(s).await;
    }
    front.shutdown().await;
}
