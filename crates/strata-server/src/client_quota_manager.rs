//! Client quotas enforced: Kafka's `ClientQuotaManager` for the byte rates of producers
//! (`producer_byte_rate`) and consumers (`consumer_byte_rate`), its
//! `ControllerMutationQuotaManager` for the partitions created and deleted
//! (`controller_mutation_rate`, KIP-599, a token bucket) and its `ConnectionQuotas` for the
//! connections an address opens (`connection_creation_rate`, KIP-612, by ip entity).
//!
//! A request is charged to the quota entity that applies to its principal's user name and its
//! client id, found in Kafka's order (`DefaultQuotaCallback`): /users/u/clients/c,
//! /users/u/clients/<default>, /users/u, /users/<default>/clients/c,
//! /users/<default>/clients/<default>, /users/<default>, /clients/c, /clients/<default>. The
//! level that matched decides which clients share a rate (the *tags*): a quota of /users/u is
//! shared by every client of user u, a /clients/<default> quota is each client id's own.
//!
//! The rate is Kafka's `Rate` over `quota.window.num` samples of `quota.window.size.seconds`:
//! the bytes of the samples still in the window over the time they span, counted as at least
//! `quota.window.num - 1` windows, so that a client's first burst is spread over the whole
//! window instead of throttling it at once. A request that takes the rate above the quota is
//! recorded anyway and answered with the time the client must stay quiet for the rate to come
//! back to the quota: `(rate - quota) / quota × window` (Kafka's `QuotaUtils.throttleTime`).
//! The connection then mutes the client for that long (KIP-219); this module only computes it.
//!
//! A tenant's quotas are cluster-wide (Kora's): each broker holds the tenant to its share of
//! them, which the active controller decides from the rates every broker reports in its
//! heartbeats ([`demand_shares`]): a floor for every live broker, so that load arriving
//! somewhere new is served at once, and the rest by demand, a broker where the tenant is held
//! at its share counting double, so that quota flows to where it is wanted. Until a broker
//! hears its shares (a single node never does) it holds a tenant to the whole quota.
//!
//! Sans-IO: the caller passes the clock and the image. The sensors (one rate per tags and
//! quota kind) are created only for clients a quota applies to, expire after an hour unused,
//! as Kafka's do, and are bounded in number, since client ids are the client's choice.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use std::net::IpAddr;

use strata_meta::client_quota::{QuotaEntity, CLIENT_ID, IP, USER};
use strata_meta::MetadataImage;

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Bytes of Produce requests per second.
    Produce,
    /// Bytes of Fetch responses to consumers per second.
    Fetch,
    /// Request handling time, in percent of one thread (KIP-124).
    Request,
    /// Partitions created or deleted per second (KIP-599).
    ControllerMutation,
    /// Connections opened per second by one address (KIP-612).
    ConnectionCreation,
}

impl QuotaKind {
    /// The client-quota key that sets it.
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => "producer_byte_rate",
            QuotaKind::Fetch => "consumer_byte_rate",
            QuotaKind::Request => "request_percentage",
            QuotaKind::ControllerMutation => "controller_mutation_rate",
            QuotaKind::ConnectionCreation => "connection_creation_rate",
        }
    }

    /// The kind a tenant quota key sets (tenants have byte rates and a request share).
    pub fn of_tenant_key(key: &str) -> Option<Self> {
        [QuotaKind::Produce, QuotaKind::Fetch, QuotaKind::Request]
            .into_iter()
            .find(|k| k.key() == key)
    }

    fn label(self) -> &'static str {
        match self {
            QuotaKind::Produce => "produce",
            QuotaKind::Fetch => "fetch",
            QuotaKind::Request => "request",
            QuotaKind::ControllerMutation => "controller_mutation",
            QuotaKind::ConnectionCreation => "connection_creation",
        }
    }
}

/// Which clients share a rate: Kafka's quota metric tags, the user and client id of the
/// level that matched, empty for a level that does not name it; for connection creation, the
/// address alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaTags {
    pub user: String,
    pub client_id: String,
    pub ip: String,
    /// The tenant whose quota the rate is, for all of its users together.
    pub tenant: String,
}

/// The window quotas are measured over (`quota.window.num` × `quota.window.size.seconds`).
#[derive(Debug, Clone, Copy)]
pub struct QuotaWindow {
    pub samples: u32,
    pub sample: Duration,
}

impl Default for QuotaWindow {
    /// Kafka's defaults: 11 samples of one second.
    fn default() -> Self {
        Self {
            samples: 11,
            sample: Duration::from_secs(1),
        }
    }
}

/// What one request was charged: the rate it counts in, and how long the client is throttled
/// for it (zero when the rate stays within the quota).
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub kind: QuotaKind,
    /// The rates charged: the client's quota's, its tenant's, or both.
    pub rates: Vec<QuotaTags>,
    pub value: f64,
    pub throttle: Duration,
}

/// What a controller mutation request was charged (KIP-599).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MutationCharge {
    /// Refused (THROTTLING_QUOTA_EXCEEDED): a strict request while the client's bucket is
    /// empty. A refused mutation is not recorded.
    pub refused: bool,
    pub throttle: Duration,
}

/// How a level of the quota lookup names the user or the client id.
#[derive(Debug, Clone, Copy)]
enum LevelPart {
    /// The client's own name.
    Named,
    /// The entity type's default (`<default>`).
    Default,
    /// Not part of the entity.
    Absent,
}

impl LevelPart {
    /// The entity name this part looks up for `name`: `Some(None)` is the default entity.
    fn name(self, name: &str) -> Option<Option<&str>> {
        match self {
            LevelPart::Named => Some(Some(name)),
            LevelPart::Default => Some(None),
            LevelPart::Absent => None,
        }
    }
}

/// Kafka's lookup order (user part, client-id part), most specific first. A rate is kept for
/// the user and the client id of the parts a level has, named or default, so that a default
/// quota is each user's or client's own.
const LEVELS: [(LevelPart, LevelPart); 8] = {
    use LevelPart::{Absent, Default, Named};
    [
        (Named, Named),
        (Named, Default),
        (Named, Absent),
        (Default, Named),
        (Default, Default),
        (Default, Absent),
        (Absent, Named),
        (Absent, Default),
    ]
};

/// Sensors unused for this long are dropped (Kafka's quota sensors' inactivity expiry).
const SENSOR_EXPIRY: Duration = Duration::from_secs(3600);
/// Most sensors kept: beyond, the least recently used half is dropped.
const MAX_SENSORS: usize = 50_000;
/// How often the map is swept for expired sensors.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One sample of a rate: Kafka's `SampledStat.Sample`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    start: Instant,
    value: f64,
}

/// One rate, with the totals `/metrics` shows for it.
#[derive(Debug)]
struct Sensor {
    /// At most `QuotaWindow::samples`, used as a ring; `current` is the newest.
    samples: Vec<Sample>,
    current: usize,
    /// Kafka's `TokenBucket` of controller mutation quotas: the tokens left (negative when
    /// overdrawn) and when they were last refilled; `None` until first used.
    bucket: Option<(f64, Instant)>,
    last_used: Instant,
    /// What was recorded: bytes, partitions or connections.
    usage: f64,
    throttled: u64,
    throttle_ms: u64,
}

impl Sensor {
    fn new(now: Instant) -> Self {
        Self {
            samples: vec![Sample {
                start: now,
                value: 0.0,
            }],
            current: 0,
            bucket: None,
            last_used: now,
            usage: 0.0,
            throttled: 0,
            throttle_ms: 0,
        }
    }

    /// Kafka's `SampledStat.record`: into the current sample, or a new one once the current
    /// sample's window has passed.
    fn record(&mut self, window: QuotaWindow, value: f64, now: Instant) {
        if now.saturating_duration_since(self.samples[self.current].start) >= window.sample {
            self.current = (self.current + 1) % window.samples as usize;
            let fresh = Sample {
                start: now,
                value: 0.0,
            };
            if self.current >= self.samples.len() {
                self.samples.push(fresh);
            } else {
                self.samples[self.current] = fresh;
            }
        }
        self.samples[self.current].value += value;
        self.last_used = now;
    }

    /// Kafka's `TokenBucket`: the tokens after refilling at `quota` per second up to `burst`.
    fn tokens(&mut self, quota: f64, burst: f64, now: Instant) -> f64 {
        let (tokens, refilled) = self.bucket.unwrap_or((burst, now));
        let elapsed = now.saturating_duration_since(refilled).as_secs_f64();
        let tokens = burst.min(tokens + quota * elapsed);
        self.bucket = Some((tokens, now));
        self.last_used = now;
        tokens
    }

    fn note_throttle(&mut self, throttle: Duration) {
        if !throttle.is_zero() {
            self.throttled += 1;
            self.throttle_ms += throttle.as_millis() as u64;
        }
    }

    /// Kafka's `Rate.measure` in units per second, with the window it divided by.
    fn rate(&mut self, window: QuotaWindow, now: Instant) -> (f64, Duration) {
        // Kafka's `purgeObsoleteSamples`: a sample older than the whole window counts nothing.
        let expire_age = window.sample * window.samples;
        for s in &mut self.samples {
            if now.saturating_duration_since(s.start) >= expire_age {
                *s = Sample {
                    start: now,
                    value: 0.0,
                };
            }
        }
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        let oldest = self.samples.iter().map(|s| s.start).min().unwrap_or(now);
        // Kafka's `Rate.windowSize`: at least `samples - 1` full windows.
        let mut elapsed = now.saturating_duration_since(oldest);
        let full_windows = (elapsed.as_nanos() / window.sample.as_nanos().max(1)) as u32;
        let min_full_windows = window.samples.saturating_sub(1);
        if full_windows < min_full_windows {
            elapsed += window.sample * (min_full_windows - full_windows);
        }
        let elapsed = elapsed.max(Duration::from_millis(1));
        (total / elapsed.as_secs_f64(), elapsed)
    }
}

struct Sensors {
    map: HashMap<(QuotaKind, QuotaTags), Sensor>,
    last_sweep: Instant,
}

/// The broker's client quota sensors. One lock, held for a map lookup and a few additions.
pub struct ClientQuotaManager {
    window: QuotaWindow,
    sensors: Mutex<Sensors>,
    /// This broker's fraction of each (tenant, quota) from the controller; absent: whole.
    tenant_shares: RwLock<HashMap<(String, QuotaKind), f64>>,
}

/// A tenant's rate against one of its quotas on this broker (see
/// [`ClientQuotaManager::tenant_usage`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRate {
    pub tenant_id: String,
    pub kind: QuotaKind,
    /// Over the quota window, in the quota's unit per second.
    pub rate: f64,
    /// At (or near) the share this broker holds the tenant to: it wants more here.
    pub saturated: bool,
}

/// Part of a tenant quota split evenly over the live brokers whatever their demand.
const SHARE_FLOOR: f64 = 0.1;
/// A tenant whose rate on a broker is at least this part of its share there is saturated.
const SATURATED: f64 = 0.9;

/// Kora's split of a tenant quota across brokers: each broker's fraction, given each live
/// broker's `(id, rate, saturated)`. [`SHARE_FLOOR`] is split evenly; the rest goes by rate, a
/// saturated broker's counting double, so that share moves from brokers with room to spare to
/// those where the tenant is held back. Without any demand the split is even. The fractions
/// add up to 1.
pub fn demand_shares(demands: &[(i32, f64, bool)]) -> Vec<(i32, f64)> {
    let n = demands.len() as f64;
    let weight = |(_, rate, saturated): &(i32, f64, bool)| {
        rate.max(0.0) * if *saturated { 2.0 } else { 1.0 }
    };
    let total: f64 = demands.iter().map(weight).sum();
    demands
        .iter()
        .map(|d| {
            let fraction = if total > 0.0 {
                SHARE_FLOOR / n + (1.0 - SHARE_FLOOR) * weight(d) / total
            } else {
                1.0 / n
            };
            (d.0, fraction)
        })
        .collect()
}

impl ClientQuotaManager {
    pub fn new(window: QuotaWindow) -> Self {
        assert!(window.samples >= 1 && !window.sample.is_zero());
        Self {
            window,
            sensors: Mutex::new(Sensors {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            tenant_shares: RwLock::default(),
        }
    }

    /// This broker's fraction of `tenant`'s quota of `kind`.
    fn tenant_share(&self, tenant_id: &str, kind: QuotaKind) -> f64 {
        let shares = self.tenant_shares.read().unwrap_or_else(|e| e.into_inner());
        shares
            .get(&(tenant_id.to_string(), kind))
            .copied()
            .unwrap_or(1.0)
    }

    /// Takes the shares `(tenant id, kind, fraction)` the controller decided for this broker,
    /// replacing the last ones.
    pub fn set_tenant_shares(&self, shares: impl IntoIterator<Item = (String, QuotaKind, f64)>) {
        let shares = shares
            .into_iter()
            .filter(|(_, _, fraction)| fraction.is_finite() && *fraction > 0.0)
            .map(|(tenant, kind, fraction)| ((tenant, kind), fraction.min(1.0)))
            .collect();
        *self
            .tenant_shares
            .write()
            .unwrap_or_else(|e| e.into_inner()) = shares;
    }

    /// What each tenant with a quota used on this broker, for the controller's split: the rate
    /// of every tenant quota's sensor, and whether it reaches the share held here.
    pub fn tenant_usage(&self, image: &MetadataImage, now: Instant) -> Vec<TenantRate> {
        let mut sensors = self.locked();
        let mut usage = Vec::new();
        for ((kind, tags), sensor) in sensors.map.iter_mut() {
            let Some(tenant) = (!tags.tenant.is_empty())
                .then(|| image.tenant(&tags.tenant))
                .flatten()
            else {
                continue;
            };
            let Some(quota) = tenant.quotas.get(kind.key()) else {
                continue;
            };
            let (rate, _) = sensor.rate(self.window, now);
            let held_to = quota * self.tenant_share(&tenant.id, *kind);
            usage.push(TenantRate {
                tenant_id: tenant.id.clone(),
                kind: *kind,
                rate,
                saturated: rate >= SATURATED * held_to,
            });
        }
        usage
    }

    /// The quota of `kind` that applies to `user` and `client_id`, and the tags of the rate it
    /// is measured by; `None` when no quota applies.
    pub fn resolve(
        image: &MetadataImage,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
    ) -> Option<(QuotaTags, f64)> {
        // Nothing to look for in a cluster without quotas: the common case costs one check.
        image.all_client_quotas().next()?;
        LEVELS.into_iter().find_map(|(user_part, client_part)| {
            let entity = QuotaEntity::new(
                user_part
                    .name(user)
                    .map(|name| (USER, name))
                    .into_iter()
                    .chain(client_part.name(client_id).map(|name| (CLIENT_ID, name))),
            );
            let quota = *image.client_quotas(&entity)?.get(kind.key())?;
            let tag = |part: LevelPart, name: &str| match part {
                LevelPart::Absent => String::new(),
                LevelPart::Named | LevelPart::Default => name.to_string(),
            };
            let tags = QuotaTags {
                user: tag(user_part, user),
                client_id: tag(client_part, client_id),
                ip: String::new(),
                tenant: String::new(),
            };
            Some((tags, quota))
        })
    }

    /// Records `value` in every rate of `kind` that applies to the client (see
    /// [`ClientQuotaManager::applicable`]) and returns what it was charged, with the longest
    /// throttle any rate earns (a request quota's at most one sample window, Kafka's
    /// `boundedThrottleTime`); `None` when no quota applies. Kafka's
    /// `recordAndGetThrottleTimeMs`: the value is recorded even when it takes the rate over.
    pub fn record(
        &self,
        image: &MetadataImage,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
        value: f64,
        now: Instant,
    ) -> Option<Charge> {
        debug_assert!(matches!(
            kind,
            QuotaKind::Produce | QuotaKind::Fetch | QuotaKind::Request
        ));
        let bound = (kind == QuotaKind::Request).then_some(self.window.sample);
        let applicable = self.applicable(image, kind, user, client_id);
        if applicable.is_empty() {
            return None;
        }
        // A tenant's share here moves with its demand elsewhere: a throttle earned against a
        // small share is bounded by the quota window, after which the rate has forgotten it,
        // so that a share grown meanwhile is not held back by one earned before.
        let tenant_bound = self.window.sample * self.window.samples;
        let throttle = applicable
            .iter()
            .map(|(tags, quota)| {
                let bound = match bound {
                    _ if tags.tenant.is_empty() => bound,
                    Some(b) => Some(b.min(tenant_bound)),
                    None => Some(tenant_bound),
                };
                self.charge_rate(kind, tags, *quota, value, bound, now)
            })
            .max()
            .unwrap_or_default();
        Some(Charge {
            kind,
            rates: applicable.into_iter().map(|(tags, _)| tags).collect(),
            value,
            throttle,
        })
    }

    /// The quotas of `kind` a client is held to: its client quota (Kafka's lookup, see
    /// [`ClientQuotaManager::resolve`]) and, when its user belongs to a tenant with a quota of
    /// that kind, this broker's share of the tenant's, one rate for all the tenant's clients.
    /// Both hold.
    pub fn applicable(
        &self,
        image: &MetadataImage,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
    ) -> Vec<(QuotaTags, f64)> {
        let tenant = image
            .tenant_member(user)
            .and_then(|m| image.tenant(&m.tenant_id))
            .and_then(|t| {
                let quota = *t.quotas.get(kind.key())? * self.tenant_share(&t.id, kind);
                let tags = QuotaTags {
                    tenant: t.id.clone(),
                    ..QuotaTags::default()
                };
                Some((tags, quota))
            });
        Self::resolve(image, kind, user, client_id)
            .into_iter()
            .chain(tenant)
            .collect()
    }

    /// Records `value` in the rate of `(kind, tags)` and returns the throttle time it earns
    /// over `quota` (Kafka's `QuotaUtils.throttleTime`), at most `bound` when given (Kafka's
    /// `boundedThrottleTime`).
    fn charge_rate(
        &self,
        kind: QuotaKind,
        tags: &QuotaTags,
        quota: f64,
        value: f64,
        bound: Option<Duration>,
        now: Instant,
    ) -> Duration {
        let mut sensors = self.locked();
        let sensor = sensors.sensor(kind, tags, now);
        sensor.record(self.window, value, now);
        sensor.usage += value;
        let (rate, window) = sensor.rate(self.window, now);
        let mut throttle = if rate > quota {
            let ms = (rate - quota) / quota * window.as_secs_f64() * 1000.0;
            Duration::from_millis(ms.min(i32::MAX as f64) as u64)
        } else {
            Duration::ZERO
        };
        if let Some(bound) = bound {
            throttle = throttle.min(bound);
        }
        sensor.note_throttle(throttle);
        throttle
    }

    /// Kafka's `ClientRequestQuotaManager` (KIP-124): charges `cpu`, the time a request took to
    /// handle, to the client's `request_percentage` (percent of one thread's time) and returns
    /// the throttle time it earns, at most one sample window; `None` when no quota applies.
    pub fn record_request(
        &self,
        image: &MetadataImage,
        user: &str,
        client_id: &str,
        cpu: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let percent_seconds = cpu.as_secs_f64() * 100.0;
        let charge = self.record(
            image,
            QuotaKind::Request,
            user,
            client_id,
            percent_seconds,
            now,
        )?;
        Some(charge.throttle)
    }

    /// Kafka's `ConnectionQuotas.recordIpConnectionMaybeThrottle`: records a connection from
    /// `ip` against the `connection_creation_rate` of its ip entity (or the default ip
    /// entity) and returns how long to hold it before closing it when that takes the address
    /// over its rate, at most one sample window; zero when it may stay.
    pub fn record_connection(&self, image: &MetadataImage, ip: IpAddr, now: Instant) -> Duration {
        let Some((tags, quota)) = Self::resolve_ip(image, ip) else {
            return Duration::ZERO;
        };
        let bound = Some(self.window.sample);
        self.charge_rate(QuotaKind::ConnectionCreation, &tags, quota, 1.0, bound, now)
    }

    /// The `connection_creation_rate` of `ip`: its own ip entity's (however the address was
    /// written) or the default ip entity's.
    fn resolve_ip(image: &MetadataImage, ip: IpAddr) -> Option<(QuotaTags, f64)> {
        let key = QuotaKind::ConnectionCreation.key();
        let ip = ip.to_canonical();
        let own = image.all_client_quotas().find_map(|(entity, quotas)| {
            let name = entity.0.get(IP)?.as_deref()?;
            let matches = name.parse::<IpAddr>().ok()?.to_canonical() == ip;
            matches.then(|| quotas.get(key).copied()).flatten()
        });
        let quota = own.or_else(|| {
            let default = QuotaEntity::new([(IP, None)]);
            image.client_quotas(&default)?.get(key).copied()
        })?;
        let tags = QuotaTags {
            ip: ip.to_string(),
            ..QuotaTags::default()
        };
        Some((tags, quota))
    }

    /// Kafka's controller mutation quota (KIP-599): charges `mutations` (partitions created
    /// or deleted) to the client's token bucket, which refills at its
    /// `controller_mutation_rate` up to that rate over the whole window. A `strict` request
    /// (CreateTopics v6+, CreatePartitions v3+, DeleteTopics v5+) is refused while the bucket
    /// is overdrawn, with the time until it is not; another is taken and throttled for the
    /// time its overdraft takes to refill. `None` when no quota applies.
    pub fn record_mutations(
        &self,
        image: &MetadataImage,
        user: &str,
        client_id: &str,
        mutations: f64,
        strict: bool,
        now: Instant,
    ) -> Option<MutationCharge> {
        let kind = QuotaKind::ControllerMutation;
        let (tags, quota) = Self::resolve(image, kind, user, client_id)?;
        let burst = quota * self.window.samples as f64 * self.window.sample.as_secs_f64();
        let mut sensors = self.locked();
        let sensor = sensors.sensor(kind, &tags, now);
        let tokens = sensor.tokens(quota, burst, now);
        let wait = |tokens: f64| {
            let ms = (-tokens / quota * 1000.0).round().max(0.0);
            Duration::from_millis(ms.min(i32::MAX as f64) as u64)
        };
        let charge = if strict && tokens < 0.0 {
            MutationCharge {
                refused: true,
                throttle: wait(tokens),
            }
        } else {
            let left = tokens - mutations;
            sensor.bucket = Some((left, now));
            sensor.usage += mutations;
            MutationCharge {
                refused: false,
                // A strict request taken is not throttled: the next one is refused instead.
                throttle: if strict { Duration::ZERO } else { wait(left) },
            }
        };
        sensor.note_throttle(charge.throttle);
        Some(charge)
    }

    /// Takes a charge back (Kafka's `unrecordQuotaSensor`): a throttled Fetch is answered
    /// without its records, so its bytes do not count.
    pub fn unrecord(&self, charge: &Charge, now: Instant) {
        let mut sensors = self.locked();
        for tags in &charge.rates {
            let sensor = sensors.sensor(charge.kind, tags, now);
            sensor.record(self.window, -charge.value, now);
            sensor.usage -= charge.value;
        }
    }

    /// Kafka's `getMaxValueInQuotaWindow`: the most a single response may carry under the
    /// client's quota of `kind` (what the quota allows over all but one sample), so that one
    /// fetch cannot take many windows' worth; `None` when no quota applies.
    pub fn max_value_in_window(
        &self,
        image: &MetadataImage,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
    ) -> Option<f64> {
        let quota = self
            .applicable(image, kind, user, client_id)
            .into_iter()
            .map(|(_, quota)| quota)
            .reduce(f64::min)?;
        let span = self.window.sample.as_secs_f64() * self.window.samples.saturating_sub(1) as f64;
        Some(quota * span)
    }

    /// Writes the per-client totals in the Prometheus text format: bytes charged, throttled
    /// responses and throttle time, labelled with the quota and the rate's user and client id.
    pub fn render_metrics(&self, out: &mut String) {
        let sensors = self.locked();
        let mut rows: Vec<_> = sensors.map.iter().collect();
        rows.sort_by(|a, b| (a.0 .0.label(), &a.0 .1).cmp(&(b.0 .0.label(), &b.0 .1)));
        for (name, help, value) in [
            (
                "strata_quota_usage_total",
                "What was charged to a client quota (bytes, percent-seconds of a thread, partitions or connections), by quota and the user, client id or address its rate is kept for.",
                (|s: &Sensor| s.usage.max(0.0).round() as u64) as fn(&Sensor) -> u64,
            ),
            (
                "strata_quota_throttled_responses_total",
                "Requests and connections throttled for a quota.",
                |s: &Sensor| s.throttled,
            ),
            (
                "strata_quota_throttle_time_ms_total",
                "Milliseconds clients were throttled for a quota (KIP-219 throttle_time_ms).",
                |s: &Sensor| s.throttle_ms,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((kind, tags), sensor) in &rows {
                let _ = writeln!(
                    out,
                    "{name}{{quota=\"{}\",tenant=\"{}\",user=\"{}\",client_id=\"{}\",ip=\"{}\"}} {}",
                    kind.label(),
                    tags.tenant,
                    label_value(&tags.user),
                    label_value(&tags.client_id),
                    tags.ip,
                    value(sensor)
                );
            }
        }
        drop(sensors);
        let shares = self.tenant_shares.read().unwrap_or_else(|e| e.into_inner());
        let mut shares: Vec<_> = shares.iter().collect();
        shares.sort_by(|a, b| (&a.0 .0, a.0 .1.label()).cmp(&(&b.0 .0, b.0 .1.label())));
        let name = "strata_tenant_quota_share";
        let _ = writeln!(
            out,
            "# HELP {name} This broker's fraction of a tenant's cluster-wide quota, as the controller split it by demand.\n# TYPE {name} gauge"
        );
        for ((tenant, kind), fraction) in shares {
            let quota = kind.label();
            let _ = writeln!(
                out,
                "{name}{{quota=\"{quota}\",tenant=\"{tenant}\"}} {fraction}"
            );
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Sensors> {
        // A panic while holding the lock leaves counts, never a broken invariant.
        self.sensors.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sensors {
    /// The sensor of `(kind, tags)`, created if needed, after dropping expired ones now and
    /// then and, at the bound, the least recently used half.
    fn sensor(&mut self, kind: QuotaKind, tags: &QuotaTags, now: Instant) -> &mut Sensor {
        let key = (kind, tags.clone());
        if !self.map.contains_key(&key) {
            if now.saturating_duration_since(self.last_sweep) >= SWEEP_EVERY {
                self.last_sweep = now;
                self.map
                    .retain(|_, s| now.saturating_duration_since(s.last_used) < SENSOR_EXPIRY);
            }
            if self.map.len() >= MAX_SENSORS {
                let mut used: Vec<Instant> = self.map.values().map(|s| s.last_used).collect();
                let middle = used.len() / 2;
                let (_, cutoff, _) = used.select_nth_unstable(middle);
                let cutoff = *cutoff;
                self.map.retain(|_, s| s.last_used > cutoff);
            }
        }
        self.map.entry(key).or_insert_with(|| Sensor::new(now))
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_meta::MetadataRecord;

    /// An entity as (type, name) pairs, `None` the default.
    type Entity<'a> = &'a [(&'a str, Option<&'a str>)];

    fn image_with(quotas: &[(Entity<'_>, &str, f64)]) -> MetadataImage {
        let records: Vec<MetadataRecord> = quotas
            .iter()
            .map(|(entity, key, value)| MetadataRecord::ClientQuota {
                entity: QuotaEntity::new(entity.iter().copied()),
                key: key.to_string(),
                value: Some(*value),
            })
            .collect();
        MetadataImage::default().apply(&records)
    }

    fn tags(user: &str, client_id: &str) -> QuotaTags {
        QuotaTags {
            user: user.into(),
            client_id: client_id.into(),
            ip: String::new(),
            tenant: String::new(),
        }
    }

    #[test]
    fn quotas_resolve_in_kafkas_order_with_the_tags_of_the_level() {
        let produce = QuotaKind::Produce;
        let resolve = |image: &MetadataImage, user, client| {
            ClientQuotaManager::resolve(image, produce, user, client)
        };
        let mut levels: Vec<(Entity<'_>, f64, QuotaTags)> = vec![
            (&[("client-id", None)], 8.0, tags("", "c")),
            (&[("client-id", Some("c"))], 7.0, tags("", "c")),
            (&[("user", None)], 6.0, tags("u", "")),
            (&[("user", None), ("client-id", None)], 5.0, tags("u", "c")),
            (
                &[("user", None), ("client-id", Some("c"))],
                4.0,
                tags("u", "c"),
            ),
            (&[("user", Some("u"))], 3.0, tags("u", "")),
            (
                &[("user", Some("u")), ("client-id", None)],
                2.0,
                tags("u", "c"),
            ),
            (
                &[("user", Some("u")), ("client-id", Some("c"))],
                1.0,
                tags("u", "c"),
            ),
        ];
        assert_eq!(resolve(&MetadataImage::default(), "u", "c"), None);
        // Each more specific level, once set, wins over all set before it.
        let mut set = Vec::new();
        for (entity, value, expected) in levels.drain(..) {
            set.push((entity, "producer_byte_rate", value));
            let image = image_with(&set);
            assert_eq!(
                resolve(&image, "u", "c"),
                Some((expected, value)),
                "{entity:?}"
            );
        }
        // A quota of another kind does not apply, nor one for another user or client.
        let image = image_with(&[
            (&[("user", Some("u"))], "consumer_byte_rate", 1.0),
            (&[("user", Some("v"))], "producer_byte_rate", 1.0),
            (&[("client-id", Some("d"))], "producer_byte_rate", 1.0),
        ]);
        assert_eq!(resolve(&image, "u", "c"), None);
    }

    #[test]
    fn the_rate_spreads_a_first_burst_over_the_window_and_throttles_above_the_quota() {
        let image = image_with(&[(&[("client-id", Some("c"))], "producer_byte_rate", 1000.0)]);
        let quotas = ClientQuotaManager::new(QuotaWindow::default());
        let t0 = Instant::now();
        let charge = |bytes: f64, at: Duration| {
            quotas
                .record(&image, QuotaKind::Produce, "u", "c", bytes, t0 + at)
                .expect("a quota applies")
                .throttle
        };
        // 10,000 bytes at once is 1,000/s over the minimum of 10 windows: within the quota.
        assert_eq!(charge(10_000.0, Duration::ZERO), Duration::ZERO);
        // 5,000 more: 15,000 over 10 s is 1,500/s, half again the quota: (1.5 - 1) × 10 s.
        assert_eq!(charge(5_000.0, Duration::ZERO), Duration::from_secs(5));
        // Twelve seconds on, all of it has left the window (11 samples of 1 s).
        assert_eq!(charge(1_000.0, Duration::from_secs(12)), Duration::ZERO);
        // Another client id has no quota and is not recorded.
        assert!(quotas
            .record(&image, QuotaKind::Produce, "u", "d", 1e9, t0)
            .is_none());
        let mut out = String::new();
        quotas.render_metrics(&mut out);
        assert!(
            out.contains(
                "strata_quota_throttle_time_ms_total{quota=\"produce\",tenant=\"\",user=\"\",client_id=\"c\",ip=\"\"} 5000"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "strata_quota_usage_total{quota=\"produce\",tenant=\"\",user=\"\",client_id=\"c\",ip=\"\"} 16000"
            ),
            "{out}"
        );
    }

    #[test]
    fn an_unrecorded_charge_no_longer_counts() {
        let image = image_with(&[(&[("user", Some("u"))], "consumer_byte_rate", 100.0)]);
        let quotas = ClientQuotaManager::new(QuotaWindow::default());
        let now = Instant::now();
        let charge = quotas
            .record(&image, QuotaKind::Fetch, "u", "any", 5_000.0, now)
            .unwrap();
        assert_eq!(charge.rates, vec![tags("u", "")]);
        assert_eq!(
            charge.throttle,
            Duration::from_secs(40),
            "(500 - 100) / 100 × 10 s"
        );
        quotas.unrecord(&charge, now);
        let small = quotas
            .record(&image, QuotaKind::Fetch, "u", "other", 900.0, now)
            .unwrap();
        assert_eq!(
            small.throttle,
            Duration::ZERO,
            "the clients of u share one rate"
        );
        assert_eq!(
            quotas.max_value_in_window(&image, QuotaKind::Fetch, "u", "x"),
            Some(1_000.0),
            "the quota over 10 of the 11 samples"
        );
        assert_eq!(
            quotas.max_value_in_window(&image, QuotaKind::Produce, "u", "x"),
            None
        );
    }

    #[test]
    fn connections_are_held_when_an_address_opens_them_faster_than_its_rate() {
        // The default ip entity allows 1 connection a second; 10.0.0.1 written as its own
        // entity (in IPv4-mapped IPv6 form) 100.
        let image = image_with(&[
            (&[("ip", None)], "connection_creation_rate", 1.0),
            (
                &[("ip", Some("::ffff:10.0.0.1"))],
                "connection_creation_rate",
                100.0,
            ),
        ]);
        let quotas = ClientQuotaManager::new(QuotaWindow::default());
        let now = Instant::now();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        // Ten connections at once are 1/s over the 10 s minimum window; the eleventh is over,
        // held for at most one sample window (Kafka's bounded throttle).
        for _ in 0..10 {
            assert_eq!(quotas.record_connection(&image, other, now), Duration::ZERO);
        }
        assert_eq!(
            quotas.record_connection(&image, other, now),
            Duration::from_secs(1)
        );
        let own: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..100 {
            assert_eq!(quotas.record_connection(&image, own, now), Duration::ZERO);
        }
        assert_eq!(
            quotas.record_connection(&image, "10.0.0.3".parse().unwrap(), now),
            Duration::ZERO,
            "each address has its own rate"
        );
        let none = MetadataImage::default();
        assert_eq!(quotas.record_connection(&none, other, now), Duration::ZERO);
    }

    #[test]
    fn controller_mutations_draw_on_a_token_bucket_strictly_or_not() {
        // 2 partitions a second: a burst of 2 × 11 samples × 1 s = 22.
        let image = image_with(&[(&[("user", Some("u"))], "controller_mutation_rate", 2.0)]);
        let quotas = ClientQuotaManager::new(QuotaWindow::default());
        let t0 = Instant::now();
        let take = |n: f64, strict: bool, at: Duration| {
            quotas
                .record_mutations(&image, "u", "c", n, strict, t0 + at)
                .expect("a quota applies")
        };
        // 20 of 22 taken; 10 more overdraw the bucket by 8, which a strict request may still
        // do, unthrottled; the next strict one is refused until the 8 refill (4 s).
        let ok = MutationCharge {
            refused: false,
            throttle: Duration::ZERO,
        };
        assert_eq!(take(20.0, true, Duration::ZERO), ok);
        assert_eq!(take(10.0, true, Duration::ZERO), ok);
        assert_eq!(
            take(1.0, true, Duration::from_secs(1)),
            MutationCharge {
                refused: true,
                throttle: Duration::from_secs(3),
            }
        );
        // Permissive (older versions): taken, and throttled until the overdraft refills.
        assert_eq!(
            take(4.0, false, Duration::from_secs(1)),
            MutationCharge {
                refused: false,
                throttle: Duration::from_secs(5),
            }
        );
        // Long after, the bucket is full again, never more.
        assert_eq!(take(22.0, true, Duration::from_secs(600)), ok);
        assert!(quotas
            .record_mutations(&image, "v", "c", 1e6, true, t0)
            .is_none());
    }

    /// Tenant `lc-aaaa1` with a produce quota of 1,000 B/s, and `members` as its users.
    fn acme_with(members: &[&str]) -> Vec<MetadataRecord> {
        use strata_meta::tenant::{Tenant, TenantLimits, TenantMember};
        let tenant = MetadataRecord::Tenant {
            tenant: Tenant {
                id: "lc-aaaa1".into(),
                name: "acme".into(),
                quotas: [("producer_byte_rate".to_string(), 1000.0)].into(),
                limits: TenantLimits::default(),
            },
        };
        let member = |user: &&str| MetadataRecord::TenantUser {
            user: user.to_string(),
            member: Some(TenantMember {
                tenant_id: "lc-aaaa1".into(),
                admin: false,
            }),
        };
        std::iter::once(tenant)
            .chain(members.iter().map(member))
            .collect()
    }

    #[test]
    fn a_tenants_users_share_its_quota_and_their_own_quotas_hold_too() {
        let image = image_with(&[(&[("user", Some("bob"))], "producer_byte_rate", 500.0)])
            .apply(&acme_with(&["alice", "bob"]));
        let quotas = ClientQuotaManager::new(QuotaWindow::default());
        let now = Instant::now();
        let produce = |user: &str, bytes: f64| {
            quotas
                .record(&image, QuotaKind::Produce, user, "c", bytes, now)
                .expect("a quota applies")
        };
        // Alice alone uses 8,000 of the tenant's 10,000 over the window: within it.
        let alice = produce("alice", 8_000.0);
        assert_eq!(alice.throttle, Duration::ZERO);
        assert_eq!(
            alice.rates,
            vec![QuotaTags {
                tenant: "lc-aaaa1".into(),
                ..QuotaTags::default()
            }]
        );
        // Bob's 4,000 is within his own 5,000 but takes the tenant to 12,000: 20% over, 2 s.
        let bob = produce("bob", 4_000.0);
        assert_eq!(bob.rates.len(), 2, "his own quota and the tenant's");
        assert_eq!(bob.throttle, Duration::from_secs(2));
        assert_eq!(
            quotas.max_value_in_window(&image, QuotaKind::Produce, "bob", "c"),
            Some(5_000.0),
            "the tighter of the two"
        );
        assert!(quotas
            .record(&image, QuotaKind::Produce, "carol", "c", 1e9, now)
            .is_none());
        let mut out = String::new();
        quotas.render_metrics(&mut out);
        assert!(out.contains("strata_quota_usage_total{quota=\"produce\",tenant=\"lc-aaaa1\",user=\"\",client_id=\"\",ip=\"\"} 12000"), "{out}");
    }

    #[test]
    fn a_tenant_quota_is_split_by_demand_and_a_broker_holds_its_share() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // No demand anywhere: even.
        let even = demand_shares(&[(1, 0.0, false), (2, 0.0, false)]);
        assert!(even.iter().all(|(_, f)| close(*f, 0.5)), "{even:?}");
        // All the load on broker 1, held back there: it gets all but the others' floors.
        let skewed = demand_shares(&[(1, 900.0, true), (2, 0.0, false), (3, 0.0, false)]);
        assert!(close(skewed[0].1, 0.1 / 3.0 + 0.9), "{skewed:?}");
        assert!(close(skewed[1].1, 0.1 / 3.0), "{skewed:?}");
        // Equal rates, one saturated: the saturated broker's weight counts double.
        let wanting = demand_shares(&[(1, 100.0, true), (2, 100.0, false)]);
        assert!(wanting[0].1 > wanting[1].1, "{wanting:?}");
        for split in [even, skewed, wanting] {
            assert!(
                close(split.iter().map(|(_, f)| f).sum::<f64>(), 1.0),
                "{split:?}"
            );
        }

        let image = MetadataImage::default().apply(&acme_with(&["alice"]));
        let quotas = ClientQuotaManager::new(QuotaWindow::default());
        let held_to =
            |q: &ClientQuotaManager| q.applicable(&image, QuotaKind::Produce, "alice", "c")[0].1;
        assert_eq!(held_to(&quotas), 1000.0, "whole until told otherwise");
        quotas.set_tenant_shares([("lc-aaaa1".to_string(), QuotaKind::Produce, 0.25)]);
        assert_eq!(held_to(&quotas), 250.0);
        let now = Instant::now();
        quotas.record(&image, QuotaKind::Produce, "alice", "c", 2_500.0, now);
        let usage = quotas.tenant_usage(&image, now);
        assert_eq!(usage.len(), 1, "{usage:?}");
        assert_eq!(
            (usage[0].kind, usage[0].saturated),
            (QuotaKind::Produce, true)
        );
        assert!(
            close(usage[0].rate, 250.0),
            "2,500 bytes over the 10 s window: {usage:?}"
        );
        // Against a tiny share, the throttle is bounded by the quota window.
        quotas.set_tenant_shares([("lc-aaaa1".to_string(), QuotaKind::Produce, 0.001)]);
        let charge = quotas
            .record(&image, QuotaKind::Produce, "alice", "c", 1e6, now)
            .expect("charged");
        let window = QuotaWindow::default();
        assert_eq!(charge.throttle, window.sample * window.samples);
        quotas.set_tenant_shares([]);
        assert_eq!(held_to(&quotas), 1000.0);
    }

    #[test]
    fn sensors_are_bounded_and_labels_escaped() {
        let image = image_with(&[(&[("client-id", None)], "producer_byte_rate", 1e6)]);
        let quotas = ClientQuotaManager::new(QuotaWindow::default());
        let now = Instant::now();
        for i in 0..MAX_SENSORS + 10 {
            let client = format!("client-{i}");
            let at = now + Duration::from_micros(i as u64);
            quotas.record(&image, QuotaKind::Produce, "u", &client, 1.0, at);
        }
        let kept = quotas.locked().map.len();
        assert!(kept <= MAX_SENSORS, "{kept}");
        assert!(quotas.locked().map.contains_key(&(
            QuotaKind::Produce,
            tags("", &format!("client-{}", MAX_SENSORS + 9))
        )));
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
