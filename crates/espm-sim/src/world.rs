//! The provider's world as a pure state machine: customers, properties, meters, connections,
//! shares, pending requests and the notification queue, with PM's coupling rules. No HTTP here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono_tz::America::New_York;
use espm_model::{
    AccessLevel, AccountInfo, Address, Audit, CustomField, CustomFieldList, GrossFloorArea, Link,
    Links, MeterInfo, Notification, NotificationList, PendingAccount, PendingList, PendingMeter,
    PendingProperty, PropertyInfo,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::faults::FaultKind;
use crate::ledger::Ledger;

/// PM pages pending lists 20 at a time.
pub const PAGE_SIZE: usize = 20;

/// Custom fields as (name, value) pairs, in submission order.
pub type CustomFields = Vec<(String, String)>;

/// Why a world operation was refused. The HTTP layers map these to PM errors or JSON errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Answering a request that does not exist or was already answered (PM `-200`).
    #[error("The pending request doesn't exist or has been fulfilled")]
    NotPending,
    /// Disconnecting from an account you are not connected to (PM `-200`).
    #[error("You are not connected to this account")]
    NotConnected,
    /// Reading something you have no access to (any more): 403.
    #[error("Access Denied")]
    AccessDenied,
    /// The id does not exist at all: 404.
    #[error("{0}")]
    NotFound(String),
    /// The action conflicts with the current state (PM `-200`; 409 on the control API).
    #[error("{0}")]
    Conflict(String),
    /// The input is invalid (PM `-100`; 400 on the control API).
    #[error("{0}")]
    Invalid(String),
    /// The input is well-formed but PM's rules refuse it (PM 400 `-200`; 400 on the control API).
    #[error("{0}")]
    Rejected(String),
}

/// The provider's own PM account id (the simulator serves one provider). It is the `{id}` the
/// test-environment calls name (`POST /invite/account/{id}`, `.../customFieldList/recipient/{id}`).
pub const PROVIDER_ACCOUNT_ID: i64 = 12_345;

/// A share's access level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// `Read`.
    #[serde(rename = "Read", alias = "READ", alias = "read")]
    Read,
    /// `Read Write`.
    #[serde(
        rename = "Read Write",
        alias = "READ_WRITE",
        alias = "ReadWrite",
        alias = "read write"
    )]
    ReadWrite,
}

impl Access {
    /// As PM writes it in pending lists.
    pub fn to_model(self) -> AccessLevel {
        match self {
            Access::Read => AccessLevel::Read,
            Access::ReadWrite => AccessLevel::ReadWrite,
        }
    }

    /// As the SHAREUPDATE description words it.
    fn label(self) -> &'static str {
        match self {
            Access::Read => "Exchange Data - Read Only",
            Access::ReadWrite => "Exchange Data - Full Access",
        }
    }
}

/// A property or a meter, for the actions that take either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A property id.
    Property(i64),
    /// A meter id.
    Meter(i64),
}

/// Which pending list a [`PendingTrigger`] watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingListKind {
    /// `GET /connect/account/pending/list`.
    Connection,
    /// `GET /share/property/pending/list`.
    PropertyShare,
    /// `GET /share/meter/pending/list`.
    MeterShare,
}

/// A request answered while the provider walks a pending list: right after page `after_page` of
/// `list` was served, request `id` (an account, property or meter id) is answered, so the
/// following pages shift as they do in PM when someone answers during a walk. One-shot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PendingTrigger {
    /// The list being walked.
    pub list: PendingListKind,
    /// The page (1-based) after which the request is answered.
    pub after_page: usize,
    /// The pending request's account, property or meter id.
    pub id: i64,
    /// Accept (otherwise reject: to the list, the same as a withdrawal).
    #[serde(default)]
    pub accept: bool,
}

/// Optional details of a new customer (`POST /sim/customers`); blanks are generated from the seed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerSpec {
    /// Username (must be unique).
    pub username: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Organisation.
    pub organization: Option<String>,
    /// PM password, so the customer can call the test-environment services (`/invite/...`,
    /// `.../customFieldList/recipient/...`) with HTTP Basic; without one it cannot log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// An address as PM writes it (US for generated ones; whatever `POST /customer` sent otherwise).
#[derive(Debug, Clone)]
struct Addr(Address);

impl Addr {
    fn to_model(&self) -> Address {
        self.0.clone()
    }
}

#[derive(Debug, Clone)]
struct CustomerRec {
    username: String,
    first_name: String,
    last_name: String,
    organization: Option<String>,
    password: Option<String>,
    email: String,
    job_title: String,
    phone: String,
    address: Addr,
}

impl CustomerRec {
    fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

#[derive(Debug, Clone)]
struct PropertyRec {
    owner: i64,
    name: String,
    primary_function: &'static str,
    year_built: i32,
    floor_area: f64,
    /// PM's units, `Square Feet` unless a test asked for `Square Meters`.
    floor_area_units: String,
    address: Addr,
    created: String,
    creator: i64,
}

#[derive(Debug, Clone)]
struct MeterRec {
    property_id: i64,
    name: String,
    kind: &'static str,
    unit: &'static str,
    first_bill_date: String,
}

#[derive(Debug, Clone)]
struct Connection {
    custom_fields: CustomFields,
    created: String,
}

#[derive(Debug, Clone)]
struct Share {
    access: Access,
    /// Who sent it: the owner, or for a share forward someone the owner gave full access.
    sender: i64,
    custom_fields: CustomFields,
    created: String,
    /// Made through the test-environment invite calls (`POST /invite/...`).
    test_env: bool,
}

#[derive(Debug, Clone)]
struct PendingConnection {
    account_id: i64,
    custom_fields: CustomFields,
    created: String,
}

#[derive(Debug, Clone)]
struct PendingShare {
    target: i64,
    sender: i64,
    access: Access,
    custom_fields: CustomFields,
    created: String,
    test_env: bool,
}

const FIRST_NAMES: &[&str] = &[
    "Jane", "John", "Dana", "Lee", "Sam", "Priya", "Marco", "Aisha", "Tomas", "Mei", "Olu", "Rosa",
];
const LAST_NAMES: &[&str] = &[
    "Doe", "Reyes", "Okafor", "Patel", "Nguyen", "Schmidt", "Garcia", "Kim", "Haddad", "Larsen",
];
const ORGS: &[&str] = &[
    "ACME Corporation",
    "Riverside Property Management",
    "Harbor Holdings",
    "Okafor Holdings",
    "Bayview Schools",
    "Summit REIT",
];
const STREETS: &[&str] = &[
    "Main Street",
    "Broadway",
    "Harbor Way",
    "Oak Avenue",
    "Elm Street",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Arlington", "VA", "22201"),
    ("Fairfax", "VA", "22030"),
    ("Baltimore", "MD", "21201"),
    ("Boston", "MA", "02108"),
    ("Denver", "CO", "80202"),
];
const BUILDINGS: &[(&str, &str)] = &[
    ("Office Tower", "Office"),
    ("Elementary School", "K-12 School"),
    ("Warehouse", "Non-Refrigerated Warehouse"),
    ("Medical Office", "Medical Office"),
    ("Retail Center", "Retail Store"),
];
const METER_KINDS: &[(&str, &str)] = &[
    ("Electric", "kWh (thousand Watt-hours)"),
    ("Natural Gas", "therms"),
];

/// The simulated world of one provider.
#[derive(Debug)]
pub struct World {
    rng: ChaCha8Rng,
    customers: BTreeMap<i64, CustomerRec>,
    properties: BTreeMap<i64, PropertyRec>,
    meters: BTreeMap<i64, MeterRec>,
    connections: BTreeMap<i64, Connection>,
    property_shares: BTreeMap<i64, Share>,
    meter_shares: BTreeMap<i64, Share>,
    pending_connections: Vec<PendingConnection>,
    pending_properties: Vec<PendingShare>,
    pending_meters: Vec<PendingShare>,
    queue: VecDeque<Notification>,
    pending_triggers: Vec<PendingTrigger>,
    ledger: Ledger,
    next_low_account: i64,
    next_high_account: i64,
    next_property: i64,
    next_meter: i64,
    next_notification: i64,
}

/// Now, as PM writes audit times: US Eastern with an offset and milliseconds.
pub fn pm_now() -> String {
    chrono::Utc::now()
        .with_timezone(&New_York)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

fn fields_model(fields: &CustomFields) -> Option<CustomFieldList> {
    (!fields.is_empty()).then(|| CustomFieldList {
        fields: fields
            .iter()
            .map(|(n, v)| CustomField {
                name: n.clone(),
                value: v.clone(),
            })
            .collect(),
    })
}

fn audit(by: &str, by_id: i64, at: &str) -> Audit {
    Audit {
        created_by: Some(by.to_string()),
        created_by_account_id: Some(by_id),
        created_date: Some(at.to_string()),
        last_updated_by: Some(by.to_string()),
        last_updated_by_account_id: Some(by_id),
        last_updated_date: Some(at.to_string()),
    }
}

fn page_of<T: Clone>(items: &[T], page: usize) -> (Vec<T>, bool) {
    let page = page.max(1);
    let start = (page - 1).saturating_mul(PAGE_SIZE).min(items.len());
    let end = start.saturating_add(PAGE_SIZE).min(items.len());
    (items[start..end].to_vec(), end < items.len())
}

fn next_link(path: &str, page: usize, more: bool) -> Option<Links> {
    more.then(|| Links {
        link: vec![Link {
            link_description: Some("next page".into()),
            link: Some(format!("{path}?page={}", page.max(1) + 1)),
            http_method: Some("GET".into()),
            ..Link::default()
        }],
    })
}

impl World {
    /// An empty world (no customers, no notifications) whose ids and names derive from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Ids straddle 2^31 on purpose: clients must keep them as 64-bit values.
        let next_low_account = 60_000 + rng.gen_range(0..10_000);
        let next_high_account = 8_833_000_000 + rng.gen_range(0..100_000);
        let next_property = 5_000_000 + rng.gen_range(0..1_000_000);
        let next_meter = 2_147_483_000 + rng.gen_range(0..600);
        let next_notification = 2_147_483_500 + rng.gen_range(0..100);
        Self {
            rng,
            customers: BTreeMap::new(),
            properties: BTreeMap::new(),
            meters: BTreeMap::new(),
            connections: BTreeMap::new(),
            property_shares: BTreeMap::new(),
            meter_shares: BTreeMap::new(),
            pending_connections: Vec::new(),
            pending_properties: Vec::new(),
            pending_meters: Vec::new(),
            queue: VecDeque::new(),
            pending_triggers: Vec::new(),
            ledger: Ledger::default(),
            next_low_account,
            next_high_account,
            next_property,
            next_meter,
            next_notification,
        }
    }

    // ----- small helpers -----

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.rng.gen_range(0..list.len())]
    }

    fn new_addr(&mut self) -> Addr {
        let (city, state, zip) = CITIES[self.rng.gen_range(0..CITIES.len())];
        let number = self.rng.gen_range(1..2000);
        let street = self.pick(STREETS);
        Addr(Address {
            address1: format!("{number} {street}"),
            city: city.into(),
            state: Some(state.into()),
            postal_code: Some(zip.into()),
            country: Some("US".into()),
            ..Address::default()
        })
    }

    fn customer(&self, id: i64) -> Result<&CustomerRec, SimError> {
        self.customers
            .get(&id)
            .ok_or_else(|| SimError::NotFound(format!("Account {id} does not exist.")))
    }

    fn property(&self, id: i64) -> Result<&PropertyRec, SimError> {
        self.properties
            .get(&id)
            .ok_or_else(|| SimError::NotFound(format!("Property {id} does not exist.")))
    }

    fn meter(&self, id: i64) -> Result<&MeterRec, SimError> {
        self.meters
            .get(&id)
            .ok_or_else(|| SimError::NotFound(format!("Meter {id} does not exist.")))
    }

    fn meter_owner(&self, meter_id: i64) -> Option<i64> {
        let m = self.meters.get(&meter_id)?;
        Some(self.properties.get(&m.property_id)?.owner)
    }

    fn meters_of(&self, property_id: i64) -> Vec<i64> {
        self.meters
            .iter()
            .filter(|(_, m)| m.property_id == property_id)
            .map(|(id, _)| *id)
            .collect()
    }

    fn alloc_account(&mut self) -> i64 {
        if self.rng.gen_bool(0.5) {
            self.next_high_account += self.rng.gen_range(1..=500);
            self.next_high_account
        } else {
            self.next_low_account += self.rng.gen_range(1..=50);
            self.next_low_account
        }
    }

    fn notify(
        &mut self,
        code: &str,
        description: String,
        account_id: i64,
        property_id: Option<i64>,
        meter_id: Option<i64>,
        created_by: i64,
    ) -> i64 {
        let at = pm_now();
        let username = self
            .customers
            .get(&account_id)
            .map(|c| c.username.clone())
            .unwrap_or_default();
        let by = self
            .customers
            .get(&created_by)
            .map(|c| c.username.clone())
            .unwrap_or_default();
        let id = self.next_notification;
        self.next_notification += 1;
        self.ledger.created(id, code, &at);
        self.queue.push_back(Notification {
            notification_type_code: code.to_string(),
            notification_id: id,
            description,
            account_id: Some(account_id),
            username: Some(username),
            property_id,
            meter_id,
            notification_created_date: Some(at),
            notification_created_by: Some(by),
            notification_created_by_account_id: Some(created_by.to_string()),
        });
        id
    }

    // ----- read-only views -----

    /// The ledger of notifications and reads.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Notifications waiting to be read.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the provider is connected to `account_id`.
    pub fn is_connected(&self, account_id: i64) -> bool {
        self.connections.contains_key(&account_id)
    }

    /// The access level of an accepted property share.
    pub fn property_share(&self, property_id: i64) -> Option<Access> {
        self.property_shares.get(&property_id).map(|s| s.access)
    }

    /// The access level of an accepted meter share.
    pub fn meter_share(&self, meter_id: i64) -> Option<Access> {
        self.meter_shares.get(&meter_id).map(|s| s.access)
    }

    /// Whether a connection request from `account_id` is pending.
    pub fn has_pending_connection(&self, account_id: i64) -> bool {
        self.pending_connections
            .iter()
            .any(|p| p.account_id == account_id)
    }

    /// Whether a share of `property_id` is pending.
    pub fn has_pending_property(&self, property_id: i64) -> bool {
        self.pending_properties
            .iter()
            .any(|p| p.target == property_id)
    }

    /// Whether a share of `meter_id` is pending.
    pub fn has_pending_meter(&self, meter_id: i64) -> bool {
        self.pending_meters.iter().any(|p| p.target == meter_id)
    }

    /// Pending (connections, property shares, meter shares).
    pub fn pending_counts(&self) -> (usize, usize, usize) {
        (
            self.pending_connections.len(),
            self.pending_properties.len(),
            self.pending_meters.len(),
        )
    }

    /// All customer account ids.
    pub fn customer_ids(&self) -> Vec<i64> {
        self.customers.keys().copied().collect()
    }

    /// All property ids.
    pub fn property_ids(&self) -> Vec<i64> {
        self.properties.keys().copied().collect()
    }

    /// All meter ids.
    pub fn meter_ids(&self) -> Vec<i64> {
        self.meters.keys().copied().collect()
    }

    /// The owner (data administrator) of a property.
    pub fn property_owner(&self, property_id: i64) -> Option<i64> {
        self.properties.get(&property_id).map(|p| p.owner)
    }

    /// The property a meter belongs to.
    pub fn meter_property(&self, meter_id: i64) -> Option<i64> {
        self.meters.get(&meter_id).map(|m| m.property_id)
    }

    fn property_info(&self, property_id: i64) -> PropertyInfo {
        let Some(p) = self.properties.get(&property_id) else {
            return PropertyInfo::default();
        };
        let creator = self
            .customers
            .get(&p.creator)
            .map(|c| c.username.as_str())
            .unwrap_or_default();
        PropertyInfo {
            name: Some(p.name.clone()),
            address: Some(p.address.to_model()),
            number_of_buildings: Some(1),
            construction_status: Some("Existing".into()),
            primary_function: Some(p.primary_function.into()),
            year_built: Some(p.year_built),
            gross_floor_area: Some(GrossFloorArea {
                units: Some(p.floor_area_units.clone()),
                temporary: Some(false),
                default: None,
                value: Some(p.floor_area),
            }),
            occupancy_percentage: Some(90),
            is_federal_property: Some(false),
            notes: None,
            access_level: None,
            audit: Some(audit(creator, p.creator, &p.created)),
        }
    }

    fn account_info(c: &CustomerRec) -> AccountInfo {
        AccountInfo {
            first_name: Some(c.first_name.clone()),
            last_name: Some(c.last_name.clone()),
            email: Some(c.email.clone()),
            address: Some(c.address.to_model()),
            job_title: Some(c.job_title.clone()),
            phone: Some(c.phone.clone()),
            organization: c.organization.clone(),
        }
    }

    fn username_of(&self, id: i64) -> String {
        self.customers
            .get(&id)
            .map(|c| c.username.clone())
            .unwrap_or_default()
    }

    /// `GET /connect/account/pending/list?page=N`.
    pub fn pending_accounts_page(&self, page: usize) -> PendingList {
        let (items, more) = page_of(&self.pending_connections, page);
        PendingList {
            accounts: items
                .iter()
                .filter_map(|p| {
                    let c = self.customers.get(&p.account_id)?;
                    Some(PendingAccount {
                        account_id: p.account_id,
                        username: c.username.clone(),
                        custom_field_list: fields_model(&p.custom_fields),
                        account_info: Some(Self::account_info(c)),
                        connection_audit: Some(audit(&c.username, p.account_id, &p.created)),
                    })
                })
                .collect(),
            links: next_link("/connect/account/pending/list", page, more),
            ..PendingList::default()
        }
    }

    /// `GET /share/property/pending/list?page=N`.
    pub fn pending_properties_page(&self, page: usize) -> PendingList {
        let (items, more) = page_of(&self.pending_properties, page);
        PendingList {
            properties: items
                .iter()
                .filter_map(|p| {
                    let prop = self.properties.get(&p.target)?;
                    Some(PendingProperty {
                        property_id: p.target,
                        custom_field_list: fields_model(&p.custom_fields),
                        access_level: p.access.to_model(),
                        account_id: prop.owner,
                        username: self.username_of(prop.owner),
                        property_info: self.property_info(p.target),
                        share_audit: Some(audit(&self.username_of(p.sender), p.sender, &p.created)),
                    })
                })
                .collect(),
            links: next_link("/share/property/pending/list", page, more),
            ..PendingList::default()
        }
    }

    /// `GET /share/meter/pending/list?page=N`.
    pub fn pending_meters_page(&self, page: usize) -> PendingList {
        let (items, more) = page_of(&self.pending_meters, page);
        PendingList {
            meters: items
                .iter()
                .filter_map(|p| {
                    let m = self.meters.get(&p.target)?;
                    let owner = self.properties.get(&m.property_id)?.owner;
                    Some(PendingMeter {
                        meter_id: p.target,
                        property_id: m.property_id,
                        account_id: owner,
                        username: self.username_of(owner),
                        custom_field_list: fields_model(&p.custom_fields),
                        access_level: p.access.to_model(),
                        property_info: self.property_info(m.property_id),
                        meter_info: Some(MeterInfo {
                            id: None,
                            meter_type: Some(m.kind.into()),
                            name: Some(m.name.clone()),
                            metered: Some(true),
                            unit_of_measure: Some(m.unit.into()),
                            first_bill_date: Some(m.first_bill_date.clone()),
                            in_use: Some(true),
                            inactive_date: None,
                        }),
                        share_audit: Some(audit(&self.username_of(p.sender), p.sender, &p.created)),
                    })
                })
                .collect(),
            links: next_link("/share/meter/pending/list", page, more),
            ..PendingList::default()
        }
    }

    /// Arm a [`PendingTrigger`].
    pub fn arm_pending_trigger(&mut self, trigger: PendingTrigger) -> Result<(), SimError> {
        if trigger.after_page == 0 {
            return Err(SimError::Invalid("afterPage starts at 1".into()));
        }
        self.pending_triggers.push(trigger);
        Ok(())
    }

    /// The triggers armed and not fired yet.
    pub fn pending_triggers(&self) -> &[PendingTrigger] {
        &self.pending_triggers
    }

    /// Page `page` of `list` was served: fire (and disarm) the triggers waiting for it. Returns
    /// what each fired trigger did (answering a request that is gone is `NotPending`).
    pub fn pending_page_served(
        &mut self,
        list: PendingListKind,
        page: usize,
    ) -> Vec<(PendingTrigger, Result<(), SimError>)> {
        let page = page.max(1);
        let (fire, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_triggers)
            .into_iter()
            .partition(|t| t.list == list && t.after_page == page);
        self.pending_triggers = keep;
        fire.into_iter()
            .map(|t| {
                let done = match t.list {
                    PendingListKind::Connection => self.answer_connection(t.id, t.accept),
                    PendingListKind::PropertyShare => self.answer_property_share(t.id, t.accept),
                    PendingListKind::MeterShare => self.answer_meter_share(t.id, t.accept),
                };
                (t, done)
            })
            .collect()
    }

    /// `GET /customer/list`: (id, organisation) of every connected customer.
    pub fn customer_list(&self) -> Vec<(i64, Option<String>)> {
        self.connections
            .keys()
            .filter_map(|id| Some((*id, self.customers.get(id)?.organization.clone())))
            .collect()
    }

    /// `GET /customer/{id}`.
    pub fn customer_doc(&self, id: i64) -> Result<espm_model::Customer, SimError> {
        let c = self.customer(id)?;
        if !self.is_connected(id) {
            return Err(SimError::AccessDenied);
        }
        Ok(espm_model::Customer {
            username: Some(c.username.clone()),
            language_preference: Some("en_US".into()),
            account_info: Some(Self::account_info(c)),
            ..espm_model::Customer::default()
        })
    }

    /// `GET /property/{id}`: readable while the provider has access to the property or one of
    /// its meters, or is being offered a share of either (the pending lists show it anyway).
    pub fn property_doc(&self, id: i64) -> Result<espm_model::Property, SimError> {
        self.property(id)?;
        let meters = self.meters_of(id);
        let access = self.property_shares.get(&id).map(|s| s.access);
        let visible = access.is_some()
            || self.has_pending_property(id)
            || meters
                .iter()
                .any(|m| self.meter_shares.contains_key(m) || self.has_pending_meter(*m));
        if !visible {
            return Err(SimError::AccessDenied);
        }
        Ok(espm_model::Property {
            access_level: access.map(Access::to_model),
            ..self.property_info(id)
        })
    }

    /// `GET /account|property|meter/{id}/customFieldList`: what the customer submitted with the
    /// connection or share (accepted or still pending).
    pub fn custom_fields(&self, target: CustomFieldTarget) -> Result<CustomFields, SimError> {
        let found = match target {
            CustomFieldTarget::Account(id) => {
                self.customer(id)?;
                self.connections
                    .get(&id)
                    .map(|c| c.custom_fields.clone())
                    .or_else(|| {
                        self.pending_connections
                            .iter()
                            .find(|p| p.account_id == id)
                            .map(|p| p.custom_fields.clone())
                    })
            }
            CustomFieldTarget::Property(id) => {
                self.property(id)?;
                self.property_shares
                    .get(&id)
                    .map(|s| s.custom_fields.clone())
                    .or_else(|| {
                        self.pending_properties
                            .iter()
                            .find(|p| p.target == id)
                            .map(|p| p.custom_fields.clone())
                    })
            }
            CustomFieldTarget::Meter(id) => {
                self.meter(id)?;
                self.meter_shares
                    .get(&id)
                    .map(|s| s.custom_fields.clone())
                    .or_else(|| {
                        self.pending_meters
                            .iter()
                            .find(|p| p.target == id)
                            .map(|p| p.custom_fields.clone())
                    })
            }
        };
        found.ok_or(SimError::AccessDenied)
    }

    // ----- provider actions (the PM API) -----

    /// `GET /notification/list`. With `clear` and `commit`, everything returned is marked read
    /// (removed from the queue); otherwise it is a peek. Returns the ledger's read id and the list.
    pub fn read_notifications(
        &mut self,
        clear: bool,
        commit: bool,
        fault: Option<FaultKind>,
    ) -> (u64, NotificationList) {
        let committed = clear && commit;
        let notifications: Vec<Notification> = if committed {
            self.queue.drain(..).collect()
        } else {
            self.queue.iter().cloned().collect()
        };
        let ids = notifications.iter().map(|n| n.notification_id).collect();
        let read_id = self.ledger.read(&pm_now(), clear, committed, fault, ids);
        (read_id, NotificationList { notifications })
    }

    /// Settle whether a read's response reached the client intact.
    pub fn settle_read(&mut self, read_id: u64, delivered: bool) {
        self.ledger.settle(read_id, delivered);
    }

    fn connect(&mut self, account_id: i64) {
        if self.connections.contains_key(&account_id) {
            return;
        }
        let custom_fields = match self
            .pending_connections
            .iter()
            .position(|p| p.account_id == account_id)
        {
            Some(i) => self.pending_connections.remove(i).custom_fields,
            None => Vec::new(),
        };
        self.connections.insert(
            account_id,
            Connection {
                custom_fields,
                created: pm_now(),
            },
        );
    }

    /// `POST /connect/account/{id}`. Rejecting also rejects that owner's pending shares.
    pub fn answer_connection(&mut self, account_id: i64, accept: bool) -> Result<(), SimError> {
        if !self.has_pending_connection(account_id) {
            return Err(SimError::NotPending);
        }
        if accept {
            self.connect(account_id);
        } else {
            self.pending_connections
                .retain(|p| p.account_id != account_id);
            self.drop_pending_shares_of(account_id);
        }
        Ok(())
    }

    fn drop_pending_shares_of(&mut self, owner: i64) {
        let props = &self.properties;
        self.pending_properties
            .retain(|p| props.get(&p.target).map(|x| x.owner) != Some(owner));
        let meters: BTreeSet<i64> = self
            .pending_meters
            .iter()
            .filter(|p| self.meter_owner(p.target) == Some(owner))
            .map(|p| p.target)
            .collect();
        self.pending_meters.retain(|p| !meters.contains(&p.target));
    }

    fn accept_pending_property(&mut self, property_id: i64) {
        let Some(i) = self
            .pending_properties
            .iter()
            .position(|p| p.target == property_id)
        else {
            return;
        };
        let p = self.pending_properties.remove(i);
        if let Some(owner) = self.property_owner(property_id) {
            // A share from an unconnected owner connects you.
            self.connect(owner);
        }
        self.property_shares.insert(
            property_id,
            Share {
                access: p.access,
                sender: p.sender,
                custom_fields: p.custom_fields,
                created: pm_now(),
                test_env: p.test_env,
            },
        );
    }

    /// `POST /share/property/{id}`. Accepting connects an unconnected owner.
    pub fn answer_property_share(
        &mut self,
        property_id: i64,
        accept: bool,
    ) -> Result<(), SimError> {
        if !self.has_pending_property(property_id) {
            return Err(SimError::NotPending);
        }
        if accept {
            self.accept_pending_property(property_id);
        } else {
            self.pending_properties.retain(|p| p.target != property_id);
        }
        Ok(())
    }

    /// `POST /share/meter/{id}`. Accepting also accepts the pending share of its property and
    /// connects an unconnected owner.
    pub fn answer_meter_share(&mut self, meter_id: i64, accept: bool) -> Result<(), SimError> {
        let Some(i) = self
            .pending_meters
            .iter()
            .position(|p| p.target == meter_id)
        else {
            return Err(SimError::NotPending);
        };
        let p = self.pending_meters.remove(i);
        if !accept {
            return Ok(());
        }
        if let Some(property_id) = self.meter_property(meter_id) {
            self.accept_pending_property(property_id);
        }
        if let Some(owner) = self.meter_owner(meter_id) {
            self.connect(owner);
        }
        self.meter_shares.insert(
            meter_id,
            Share {
                access: p.access,
                sender: p.sender,
                custom_fields: p.custom_fields,
                created: pm_now(),
                test_env: p.test_env,
            },
        );
        Ok(())
    }

    fn remove_shares_of(&mut self, owner: i64) -> (Vec<i64>, Vec<i64>) {
        let props: Vec<i64> = self
            .property_shares
            .keys()
            .filter(|p| self.property_owner(**p) == Some(owner))
            .copied()
            .collect();
        let meters: Vec<i64> = self
            .meter_shares
            .keys()
            .filter(|m| self.meter_owner(**m) == Some(owner))
            .copied()
            .collect();
        for p in &props {
            self.property_shares.remove(p);
        }
        for m in &meters {
            self.meter_shares.remove(m);
        }
        (props, meters)
    }

    /// `POST /disconnect/account/{id}?keepShares=..`. Without `keep_shares` the owner's shares go
    /// too; pending requests from that owner always go.
    pub fn provider_disconnect(
        &mut self,
        account_id: i64,
        keep_shares: bool,
    ) -> Result<(), SimError> {
        if self.connections.remove(&account_id).is_none() {
            return Err(SimError::NotConnected);
        }
        self.drop_pending_shares_of(account_id);
        if !keep_shares {
            self.remove_shares_of(account_id);
        }
        Ok(())
    }

    /// `POST /unshare/property/{id}`: also removes the meter shares on that property.
    pub fn provider_unshare_property(&mut self, property_id: i64) -> Result<(), SimError> {
        if self.property_shares.remove(&property_id).is_none() {
            self.property(property_id)?;
            return Err(SimError::Conflict(
                "This property is not shared with you.".into(),
            ));
        }
        for m in self.meters_of(property_id) {
            self.meter_shares.remove(&m);
        }
        Ok(())
    }

    /// `POST /unshare/meter/{id}`.
    pub fn provider_unshare_meter(&mut self, meter_id: i64) -> Result<(), SimError> {
        if self.meter_shares.remove(&meter_id).is_none() {
            self.meter(meter_id)?;
            return Err(SimError::Conflict(
                "This meter is not shared with you.".into(),
            ));
        }
        Ok(())
    }

    /// `POST /customer`: creates a customer account and connects it to the provider.
    pub fn create_connected_customer(
        &mut self,
        new: &espm_model::NewCustomer,
    ) -> Result<i64, SimError> {
        crate::validate::new_customer(new)?;
        let c = &new.contact;
        let address = Addr(c.address.clone());
        let organization = Some(new.organization.name.trim())
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let id = self.insert_customer(CustomerRec {
            username: new.username.clone(),
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            organization,
            password: Some(new.password.clone()),
            email: c.email.clone(),
            job_title: c.job_title.clone(),
            phone: c.phone.clone(),
            address,
        })?;
        self.connect(id);
        Ok(id)
    }

    fn insert_customer(&mut self, rec: CustomerRec) -> Result<i64, SimError> {
        if rec.username.trim().is_empty() {
            return Err(SimError::Invalid("username must not be empty".into()));
        }
        if self.customers.values().any(|c| c.username == rec.username) {
            return Err(SimError::Conflict(format!(
                "The username {} is already taken.",
                rec.username
            )));
        }
        let id = self.alloc_account();
        self.customers.insert(id, rec);
        Ok(id)
    }

    // ----- the test environment's customer-side calls (PM API, authenticated as the customer) -----

    /// The customer whose PM username and password these are (customers without a password
    /// cannot log in).
    pub fn authenticate_customer(&self, username: &str, password: &str) -> Option<i64> {
        self.customers
            .iter()
            .find(|(_, c)| c.username == username && c.password.as_deref() == Some(password))
            .map(|(id, _)| *id)
    }

    fn check_recipient(recipient: i64) -> Result<(), SimError> {
        if recipient == PROVIDER_ACCOUNT_ID {
            Ok(())
        } else {
            Err(SimError::NotFound(format!(
                "Account {recipient} does not exist."
            )))
        }
    }

    /// `POST /invite/account/{recipient}` as `customer`: a pending connection request, the same
    /// as `POST /sim/connections`.
    pub fn invite_connection(
        &mut self,
        customer: i64,
        recipient: i64,
        custom_fields: CustomFields,
    ) -> Result<(), SimError> {
        Self::check_recipient(recipient)?;
        self.customer(customer)?;
        if self.is_connected(customer) {
            return Err(SimError::Rejected(
                "You are already connected to this account.".into(),
            ));
        }
        if self.has_pending_connection(customer) {
            return Err(SimError::Rejected(
                "A connection request to this account is already pending.".into(),
            ));
        }
        self.request_connection(customer, custom_fields)
    }

    /// PM's refusal of an invite for a property or meter already shared with us, or pending.
    fn check_new_share(what: &str, shared: bool, pending: bool) -> Result<(), SimError> {
        if shared {
            return Err(SimError::Rejected(format!(
                "This {what} is already shared with this account."
            )));
        }
        if pending {
            return Err(SimError::Rejected(format!(
                "A share of this {what} with this account is already pending."
            )));
        }
        Ok(())
    }

    /// `POST /invite/account/{recipient}/property/{id}?accessLevel=..` as `customer`, who must own
    /// the property: a pending property share made in the test environment.
    pub fn invite_property(
        &mut self,
        customer: i64,
        recipient: i64,
        property_id: i64,
        access: Access,
        custom_fields: CustomFields,
    ) -> Result<(), SimError> {
        Self::check_recipient(recipient)?;
        if self.property(property_id)?.owner != customer {
            return Err(SimError::AccessDenied);
        }
        Self::check_new_share(
            "property",
            self.property_shares.contains_key(&property_id),
            self.has_pending_property(property_id),
        )?;
        self.share_property(customer, Some(property_id), None, access, custom_fields)?;
        if let Some(p) = self.pending_properties.last_mut() {
            p.test_env = true;
        }
        Ok(())
    }

    /// `POST /invite/account/{recipient}/meter/{id}?accessLevel=..` as `customer`, who must own
    /// the meter's property: a pending meter share made in the test environment.
    pub fn invite_meter(
        &mut self,
        customer: i64,
        recipient: i64,
        meter_id: i64,
        access: Access,
        custom_fields: CustomFields,
    ) -> Result<(), SimError> {
        Self::check_recipient(recipient)?;
        self.meter(meter_id)?;
        if self.meter_owner(meter_id) != Some(customer) {
            return Err(SimError::AccessDenied);
        }
        Self::check_new_share(
            "meter",
            self.meter_shares.contains_key(&meter_id),
            self.has_pending_meter(meter_id),
        )?;
        self.share_meter(customer, None, Some(meter_id), access, custom_fields)?;
        if let Some(p) = self.pending_meters.last_mut() {
            p.test_env = true;
        }
        Ok(())
    }

    /// `PUT /account|property|meter/{id}/customFieldList/recipient/{recipient}` as `customer`:
    /// the customer replaces the custom field values of its connection (`Account`: its own id) or
    /// of a property / meter share it sent or owns, accepted or pending. An accepted property or
    /// meter share notifies one SHAREUPDATE (`accountId` the owner, created by `customer`);
    /// a connection or a pending request notifies nothing (the provider re-reads the list, or
    /// sees the values in the pending list). Returns the notification ids.
    pub fn submit_custom_fields(
        &mut self,
        customer: i64,
        recipient: i64,
        target: CustomFieldTarget,
        custom_fields: CustomFields,
    ) -> Result<Vec<i64>, SimError> {
        Self::check_recipient(recipient)?;
        self.customer(customer)?;
        match target {
            CustomFieldTarget::Account(id) => {
                if id != customer {
                    self.customer(id)?;
                    return Err(SimError::AccessDenied);
                }
                if let Some(c) = self.connections.get_mut(&id) {
                    c.custom_fields = custom_fields;
                } else if let Some(p) = self
                    .pending_connections
                    .iter_mut()
                    .find(|p| p.account_id == id)
                {
                    p.custom_fields = custom_fields;
                } else {
                    return Err(SimError::Rejected(
                        "You are not connected to this account".into(),
                    ));
                }
                Ok(Vec::new())
            }
            CustomFieldTarget::Property(id) | CustomFieldTarget::Meter(id) => {
                let t = match target {
                    CustomFieldTarget::Property(_) => Target::Property(id),
                    _ => Target::Meter(id),
                };
                let (pid, mid, name, owner) = self.target_names(t)?;
                let (shares, pending) = match t {
                    Target::Property(_) => {
                        (&mut self.property_shares, &mut self.pending_properties)
                    }
                    Target::Meter(_) => (&mut self.meter_shares, &mut self.pending_meters),
                };
                if let Some(share) = shares.get_mut(&id) {
                    if customer != owner && customer != share.sender {
                        return Err(SimError::AccessDenied);
                    }
                    share.custom_fields = custom_fields;
                } else if let Some(p) = pending.iter_mut().find(|p| p.target == id) {
                    if customer != owner && customer != p.sender {
                        return Err(SimError::AccessDenied);
                    }
                    p.custom_fields = custom_fields;
                    return Ok(Vec::new());
                } else if customer != owner {
                    return Err(SimError::AccessDenied);
                } else {
                    return Err(SimError::Rejected(format!(
                        "{name} is not shared with this account."
                    )));
                }
                let description = format!(
                    "{name} - Custom field values revised by {}.",
                    self.full_name(customer)
                );
                Ok(vec![self.notify(
                    "SHAREUPDATE",
                    description,
                    owner,
                    Some(pid),
                    mid,
                    customer,
                )])
            }
        }
    }

    /// Whether PM's test environment refuses the provider's unshare of this property or meter
    /// with 403 "Access Denied": its accepted share was made through the test-environment
    /// invite calls (see the crate README).
    pub fn test_env_unshare_refused(&self, target: Target) -> bool {
        match target {
            Target::Property(id) => self.property_shares.get(&id).is_some_and(|s| s.test_env),
            Target::Meter(id) => self.meter_shares.get(&id).is_some_and(|s| s.test_env),
        }
    }

    // ----- customer actions (the control API) -----

    /// A new, unconnected customer account.
    pub fn create_customer(&mut self, spec: CustomerSpec) -> Result<i64, SimError> {
        let first = spec
            .first_name
            .unwrap_or_else(|| self.pick(FIRST_NAMES).to_string());
        let last = spec
            .last_name
            .unwrap_or_else(|| self.pick(LAST_NAMES).to_string());
        let organization = spec
            .organization
            .or_else(|| Some(self.pick(ORGS).to_string()));
        let username = match spec.username {
            Some(u) => u,
            None => {
                let base = format!("{}_{}", first, last)
                    .to_lowercase()
                    .replace(' ', "_");
                let mut name = base.clone();
                let mut n = 1;
                while self.customers.values().any(|c| c.username == name) {
                    n += 1;
                    name = format!("{base}{n}");
                }
                name
            }
        };
        let address = self.new_addr();
        let phone = format!("703-555-{:04}", self.rng.gen_range(0..10_000));
        self.insert_customer(CustomerRec {
            email: format!("{username}@example.com"),
            username,
            first_name: first,
            last_name: last,
            organization,
            password: spec.password,
            job_title: "Facility Manager".into(),
            phone,
            address,
        })
    }

    /// The customer asks to connect to the provider.
    pub fn request_connection(
        &mut self,
        account_id: i64,
        custom_fields: CustomFields,
    ) -> Result<(), SimError> {
        self.customer(account_id)?;
        if self.is_connected(account_id) {
            return Err(SimError::Conflict("Already connected.".into()));
        }
        if self.has_pending_connection(account_id) {
            return Err(SimError::Conflict(
                "A connection request is already pending.".into(),
            ));
        }
        self.pending_connections.push(PendingConnection {
            account_id,
            custom_fields,
            created: pm_now(),
        });
        Ok(())
    }

    /// A share from an unconnected owner brings a connection request along.
    fn ensure_connection_path(&mut self, owner: i64) {
        if !self.is_connected(owner) && !self.has_pending_connection(owner) {
            self.pending_connections.push(PendingConnection {
                account_id: owner,
                custom_fields: Vec::new(),
                created: pm_now(),
            });
        }
    }

    fn new_property(&mut self, owner: i64, name: Option<String>) -> i64 {
        self.next_property += self.rng.gen_range(1..=50);
        let id = self.next_property;
        let (kind, function) = BUILDINGS[self.rng.gen_range(0..BUILDINGS.len())];
        let street = self.pick(STREETS);
        let name = name.unwrap_or_else(|| format!("{street} {kind}"));
        let address = self.new_addr();
        let year_built = self.rng.gen_range(1950..2024);
        let floor_area = f64::from(self.rng.gen_range(5..500) * 1000);
        self.properties.insert(
            id,
            PropertyRec {
                owner,
                name,
                primary_function: function,
                year_built,
                floor_area,
                floor_area_units: "Square Feet".into(),
                address,
                created: pm_now(),
                creator: owner,
            },
        );
        id
    }

    fn new_meter(&mut self, property_id: i64) -> i64 {
        self.next_meter += self.rng.gen_range(1..=20);
        let id = self.next_meter;
        let (kind, unit) = METER_KINDS[self.rng.gen_range(0..METER_KINDS.len())];
        let year = self.rng.gen_range(2005..2024);
        self.meters.insert(
            id,
            MeterRec {
                property_id,
                name: format!("{kind} Meter {}", id % 1000),
                kind,
                unit,
                first_bill_date: format!("{year}-01-01"),
            },
        );
        id
    }

    /// A new property of `owner`, shared with nobody yet.
    pub fn create_property(&mut self, owner: i64, name: Option<String>) -> Result<i64, SimError> {
        self.customer(owner)?;
        Ok(self.new_property(owner, name))
    }

    /// A new meter on `property_id`, shared with nobody yet.
    pub fn create_meter(&mut self, property_id: i64) -> Result<i64, SimError> {
        self.property(property_id)?;
        Ok(self.new_meter(property_id))
    }

    /// The customer shares a property (a new one when `property_id` is `None`). Returns its id.
    /// Sharing someone else's property is a share forward: the pending share names the owner
    /// (`accountId`) and the sender (`shareAudit`), and the owner's connection request comes along.
    pub fn share_property(
        &mut self,
        account_id: i64,
        property_id: Option<i64>,
        name: Option<String>,
        access: Access,
        custom_fields: CustomFields,
    ) -> Result<i64, SimError> {
        self.customer(account_id)?;
        let pid = match property_id {
            Some(pid) => {
                self.property(pid)?;
                if self.property_shares.contains_key(&pid) {
                    return Err(SimError::Conflict(
                        "The property is already shared; use /sim/shares/edit.".into(),
                    ));
                }
                if self.has_pending_property(pid) {
                    return Err(SimError::Conflict(
                        "A share of this property is already pending.".into(),
                    ));
                }
                pid
            }
            None => self.new_property(account_id, name),
        };
        let owner = self.properties[&pid].owner; // ok: checked or just created above
        self.ensure_connection_path(owner);
        self.pending_properties.push(PendingShare {
            target: pid,
            sender: account_id,
            access,
            custom_fields,
            created: pm_now(),
            test_env: false,
        });
        Ok(pid)
    }

    /// The customer edits a property's gross floor area (`units`: `Square Feet` or
    /// `Square Meters`, as PM writes them).
    pub fn set_floor_area(
        &mut self,
        property_id: i64,
        value: f64,
        units: &str,
    ) -> Result<(), SimError> {
        if !value.is_finite() || value < 0.0 {
            return Err(SimError::Invalid(format!("Invalid floor area {value}.")));
        }
        if !matches!(units, "Square Feet" | "Square Meters") {
            return Err(SimError::Invalid(format!(
                "Floor area units must be Square Feet or Square Meters, not {units:?}."
            )));
        }
        let p = self
            .properties
            .get_mut(&property_id)
            .ok_or_else(|| SimError::NotFound(format!("Property {property_id}")))?;
        p.floor_area = value;
        p.floor_area_units = units.to_string();
        Ok(())
    }

    /// The customer shares a meter (a new one when `meter_id` is `None`, on `property_id` or on a
    /// new property). Returns (meter id, property id).
    pub fn share_meter(
        &mut self,
        account_id: i64,
        property_id: Option<i64>,
        meter_id: Option<i64>,
        access: Access,
        custom_fields: CustomFields,
    ) -> Result<(i64, i64), SimError> {
        self.customer(account_id)?;
        let (mid, pid) = match meter_id {
            Some(mid) => {
                let pid = self.meter(mid)?.property_id;
                if property_id.is_some_and(|p| p != pid) {
                    return Err(SimError::Invalid(format!(
                        "Meter {mid} belongs to property {pid}."
                    )));
                }
                if self.meter_shares.contains_key(&mid) {
                    return Err(SimError::Conflict(
                        "The meter is already shared; use /sim/shares/edit.".into(),
                    ));
                }
                if self.has_pending_meter(mid) {
                    return Err(SimError::Conflict(
                        "A share of this meter is already pending.".into(),
                    ));
                }
                (mid, pid)
            }
            None => {
                let pid = match property_id {
                    Some(pid) => {
                        self.property(pid)?;
                        pid
                    }
                    None => self.new_property(account_id, None),
                };
                (self.new_meter(pid), pid)
            }
        };
        let owner = self.properties[&pid].owner; // ok: checked or just created above
        self.ensure_connection_path(owner);
        self.pending_meters.push(PendingShare {
            target: mid,
            sender: account_id,
            access,
            custom_fields,
            created: pm_now(),
            test_env: false,
        });
        Ok((mid, pid))
    }

    fn target_names(&self, target: Target) -> Result<(i64, Option<i64>, String, i64), SimError> {
        // (property id, meter id, display name, owner)
        match target {
            Target::Property(pid) => {
                let p = self.property(pid)?;
                Ok((pid, None, p.name.clone(), p.owner))
            }
            Target::Meter(mid) => {
                let m = self.meter(mid)?;
                let owner = self.property(m.property_id)?.owner;
                Ok((m.property_id, Some(mid), m.name.clone(), owner))
            }
        }
    }

    fn full_name(&self, id: i64) -> String {
        self.customers
            .get(&id)
            .map(CustomerRec::full_name)
            .unwrap_or_default()
    }

    /// The access level of an accepted share changes: one SHAREUPDATE. `accountId` is the owner
    /// (the customer whose share it is); the editor, `notificationCreatedBy...`, is `editor` or
    /// else whoever sent the share (for a forwarded share, not the owner), as in PM's example.
    pub fn edit_share(
        &mut self,
        target: Target,
        access: Access,
        editor: Option<i64>,
    ) -> Result<Vec<i64>, SimError> {
        let (pid, mid, name, owner) = self.target_names(target)?;
        if let Some(e) = editor {
            self.customer(e)?;
        }
        let share = match target {
            Target::Property(p) => self.property_shares.get_mut(&p),
            Target::Meter(m) => self.meter_shares.get_mut(&m),
        };
        let Some(share) = share else {
            return Err(SimError::Conflict("Not shared with the provider.".into()));
        };
        share.access = access;
        let editor = editor.unwrap_or(share.sender);
        let description = format!(
            "{name} - Access level revised to {} by {}.",
            access.label(),
            self.full_name(editor)
        );
        Ok(vec![self.notify(
            "SHAREUPDATE",
            description,
            owner,
            Some(pid),
            mid,
            editor,
        )])
    }

    fn unshare_notification(&mut self, target: Target, by: i64) -> i64 {
        let Ok((pid, mid, name, owner)) = self.target_names(target) else {
            return 0;
        };
        let description = format!("{name} - Share terminated by {}.", self.full_name(by));
        self.notify("UNSHARE", description, owner, Some(pid), mid, by)
    }

    /// The owner removes the provider's access: UNSHARE (for a property, one more per meter share
    /// on it, which goes too). Withdrawing a still-pending share notifies nothing.
    pub fn customer_unshare(&mut self, target: Target) -> Result<Vec<i64>, SimError> {
        let (_, _, _, owner) = self.target_names(target)?;
        match target {
            Target::Property(pid) => {
                if self.property_shares.remove(&pid).is_some() {
                    let mut ids = vec![self.unshare_notification(target, owner)];
                    for m in self.meters_of(pid) {
                        if self.meter_shares.remove(&m).is_some() {
                            ids.push(self.unshare_notification(Target::Meter(m), owner));
                        }
                    }
                    Ok(ids)
                } else if self.has_pending_property(pid) {
                    self.pending_properties.retain(|p| p.target != pid);
                    Ok(Vec::new())
                } else {
                    Err(SimError::Conflict("Not shared with the provider.".into()))
                }
            }
            Target::Meter(mid) => {
                if self.meter_shares.remove(&mid).is_some() {
                    Ok(vec![self.unshare_notification(target, owner)])
                } else if self.has_pending_meter(mid) {
                    self.pending_meters.retain(|p| p.target != mid);
                    Ok(Vec::new())
                } else {
                    Err(SimError::Conflict("Not shared with the provider.".into()))
                }
            }
        }
    }

    /// The customer disconnects: DISCONNECT, then one UNSHARE per property and meter that was
    /// shared (they are removed). Pending shares from that customer are withdrawn.
    pub fn customer_disconnect(&mut self, account_id: i64) -> Result<Vec<i64>, SimError> {
        self.customer(account_id)?;
        if self.connections.remove(&account_id).is_none() {
            return Err(SimError::NotConnected);
        }
        self.drop_pending_shares_of(account_id);
        let mut ids = vec![self.notify(
            "DISCONNECT",
            format!("You are disconnected from {}.", self.full_name(account_id)),
            account_id,
            None,
            None,
            account_id,
        )];
        let (props, meters) = self.remove_shares_of(account_id);
        for p in props {
            ids.push(self.unshare_notification(Target::Property(p), account_id));
        }
        for m in meters {
            ids.push(self.unshare_notification(Target::Meter(m), account_id));
        }
        Ok(ids)
    }

    /// The owner transfers a property: TRANSFERPROPERTY if the provider could see it (the property
    /// or one of its meters is shared), plus UNSHAREs when the new owner removes access. Pending
    /// shares of the property and its meters are withdrawn.
    pub fn transfer(
        &mut self,
        property_id: i64,
        to_account_id: i64,
        remove_access: bool,
    ) -> Result<Vec<i64>, SimError> {
        let old = self.property(property_id)?.owner;
        self.customer(to_account_id)?;
        if old == to_account_id {
            return Err(SimError::Invalid(
                "The property already belongs to that account.".into(),
            ));
        }
        let meters = self.meters_of(property_id);
        let visible = self.property_shares.contains_key(&property_id)
            || meters.iter().any(|m| self.meter_shares.contains_key(m));
        if let Some(p) = self.properties.get_mut(&property_id) {
            p.owner = to_account_id;
        }
        self.pending_properties.retain(|p| p.target != property_id);
        self.pending_meters.retain(|p| !meters.contains(&p.target));
        let mut ids = Vec::new();
        if visible {
            let name = self.properties[&property_id].name.clone(); // ok: checked above
            let to_name = self.username_of(to_account_id);
            ids.push(self.notify(
                "TRANSFERPROPERTY",
                format!(
                    "{name} ({property_id}) has been transferred to owner account {to_name} ({to_account_id})"
                ),
                to_account_id,
                Some(property_id),
                None,
                old,
            ));
        }
        if remove_access {
            if self.property_shares.remove(&property_id).is_some() {
                ids.push(self.unshare_notification(Target::Property(property_id), to_account_id));
            }
            for m in meters {
                if self.meter_shares.remove(&m).is_some() {
                    ids.push(self.unshare_notification(Target::Meter(m), to_account_id));
                }
            }
        }
        Ok(ids)
    }

    /// Load generation: `count` notifications of `types` (round robin; the four documented types
    /// when empty), referring to existing customers and properties where there are any. The world
    /// itself is not changed. Returns the first and last id (`None` when `count` is 0).
    pub fn bulk_notifications(&mut self, count: usize, types: &[String]) -> Option<(i64, i64)> {
        const DEFAULT: [&str; 4] = ["UNSHARE", "SHAREUPDATE", "DISCONNECT", "TRANSFERPROPERTY"];
        let types: Vec<String> = if types.is_empty() {
            DEFAULT.iter().map(|s| s.to_string()).collect()
        } else {
            types.to_vec()
        };
        let at = pm_now();
        let customers: Vec<(i64, String)> = self
            .customers
            .iter()
            .map(|(id, c)| (*id, c.username.clone()))
            .collect();
        let properties = self.property_ids();
        let first = self.next_notification;
        self.queue.reserve(count);
        for n in 0..count {
            let code = &types[n % types.len()];
            let (account_id, username) = if customers.is_empty() {
                (8_833_000_000 + n as i64, format!("load_user_{n}"))
            } else {
                customers[self.rng.gen_range(0..customers.len())].clone()
            };
            let property_id = match code.as_str() {
                "DISCONNECT" => None,
                _ if properties.is_empty() => Some(5_000_000 + n as i64),
                _ => Some(properties[self.rng.gen_range(0..properties.len())]),
            };
            let id = self.next_notification;
            self.next_notification += 1;
            self.ledger.created(id, code, &at);
            self.queue.push_back(Notification {
                notification_type_code: code.clone(),
                notification_id: id,
                description: format!("{code} notification {} of {count} (espm-sim load).", n + 1),
                account_id: Some(account_id),
                username: Some(username.clone()),
                property_id,
                meter_id: None,
                notification_created_date: Some(at.clone()),
                notification_created_by: Some(username),
                notification_created_by_account_id: Some(account_id.to_string()),
            });
        }
        (count > 0).then(|| (first, self.next_notification - 1))
    }

    /// Check the world's invariants; the error says which one broke.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (pid, p) in &self.properties {
            if !self.customers.contains_key(&p.owner) {
                return Err(format!("property {pid} has unknown owner {}", p.owner));
            }
        }
        for (mid, m) in &self.meters {
            if !self.properties.contains_key(&m.property_id) {
                return Err(format!("meter {mid} on unknown property"));
            }
        }
        for id in self.connections.keys() {
            if !self.customers.contains_key(id) {
                return Err(format!("connection to unknown account {id}"));
            }
        }
        for id in self.property_shares.keys() {
            if !self.properties.contains_key(id) {
                return Err(format!("share of unknown property {id}"));
            }
        }
        for id in self.meter_shares.keys() {
            if !self.meters.contains_key(id) {
                return Err(format!("share of unknown meter {id}"));
            }
        }
        let mut seen = BTreeSet::new();
        for p in &self.pending_connections {
            if !seen.insert(p.account_id) {
                return Err(format!("two pending connections from {}", p.account_id));
            }
            if self.is_connected(p.account_id) {
                return Err(format!(
                    "pending connection from connected {}",
                    p.account_id
                ));
            }
            if !self.customers.contains_key(&p.account_id) {
                return Err(format!("pending connection from unknown {}", p.account_id));
            }
        }
        for (kind, list, accepted) in [
            ("property", &self.pending_properties, &self.property_shares),
            ("meter", &self.pending_meters, &self.meter_shares),
        ] {
            let mut seen = BTreeSet::new();
            for p in list {
                if !seen.insert(p.target) {
                    return Err(format!("two pending shares of {kind} {}", p.target));
                }
                if accepted.contains_key(&p.target) {
                    return Err(format!("{kind} {} both pending and shared", p.target));
                }
                let owner = if kind == "property" {
                    self.property_owner(p.target)
                } else {
                    self.meter_owner(p.target)
                };
                let Some(owner) = owner else {
                    return Err(format!("pending share of unknown {kind} {}", p.target));
                };
                if !self.is_connected(owner) && !self.has_pending_connection(owner) {
                    return Err(format!(
                        "pending {kind} share {} from {owner}, who is neither connected nor asking",
                        p.target
                    ));
                }
            }
        }
        // The queue holds exactly the notifications the ledger has not seen handed out, in order.
        let mut last = i64::MIN;
        for n in &self.queue {
            if n.notification_id <= last {
                return Err("queue out of order".into());
            }
            last = n.notification_id;
            match self.ledger.entry(n.notification_id) {
                None => return Err(format!("notification {last} not in the ledger")),
                Some(e) if e.read_id.is_some() => {
                    return Err(format!("queued notification {last} already handed out"))
                }
                Some(_) => {}
            }
        }
        let unhanded = self
            .ledger
            .notifications
            .iter()
            .filter(|e| e.read_id.is_none())
            .count();
        if unhanded != self.queue.len() {
            return Err(format!(
                "{unhanded} notifications never handed out but {} queued",
                self.queue.len()
            ));
        }
        for r in &self.ledger.reads {
            if r.committed {
                for id in &r.notification_ids {
                    if self.ledger.entry(*id).and_then(|e| e.read_id) != Some(r.read_id) {
                        return Err(format!("read {} lost track of {id}", r.read_id));
                    }
                }
            }
        }
        Ok(())
    }

    /// A JSON picture of the world (`GET /sim/world`).
    pub fn snapshot(&self) -> serde_json::Value {
        use serde_json::json;
        let fields = |f: &CustomFields| -> serde_json::Value {
            f.iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "provider": {"accountId": PROVIDER_ACCOUNT_ID},
            "customers": self.customers.iter().map(|(id, c)| json!({
                "accountId": id, "username": c.username, "firstName": c.first_name,
                "lastName": c.last_name, "organization": c.organization,
                "connected": self.is_connected(*id),
            })).collect::<Vec<_>>(),
            "properties": self.properties.iter().map(|(id, p)| json!({
                "propertyId": id, "name": p.name, "ownerAccountId": p.owner,
                "sharedAccess": self.property_share(*id),
                "pending": self.has_pending_property(*id),
            })).collect::<Vec<_>>(),
            "meters": self.meters.iter().map(|(id, m)| json!({
                "meterId": id, "propertyId": m.property_id, "name": m.name, "type": m.kind,
                "sharedAccess": self.meter_share(*id),
                "pending": self.has_pending_meter(*id),
            })).collect::<Vec<_>>(),
            "connections": self.connections.iter().map(|(id, c)| json!({
                "accountId": id, "customFields": fields(&c.custom_fields), "createdDate": c.created,
            })).collect::<Vec<_>>(),
            "shares": {
                "properties": self.property_shares.iter().map(|(id, s)| json!({
                    "propertyId": id, "accessLevel": s.access, "createdDate": s.created,
                    "testEnvironment": s.test_env, "customFields": fields(&s.custom_fields),
                })).collect::<Vec<_>>(),
                "meters": self.meter_shares.iter().map(|(id, s)| json!({
                    "meterId": id, "accessLevel": s.access, "createdDate": s.created,
                    "testEnvironment": s.test_env, "customFields": fields(&s.custom_fields),
                })).collect::<Vec<_>>(),
            },
            "pending": {
                "connections": self.pending_connections.iter().map(|p| json!({
                    "accountId": p.account_id, "customFields": fields(&p.custom_fields), "createdDate": p.created,
                })).collect::<Vec<_>>(),
                "properties": self.pending_properties.iter().map(|p| json!({
                    "propertyId": p.target, "senderAccountId": p.sender, "accessLevel": p.access,
                    "customFields": fields(&p.custom_fields), "createdDate": p.created,
                })).collect::<Vec<_>>(),
                "meters": self.pending_meters.iter().map(|p| json!({
                    "meterId": p.target, "senderAccountId": p.sender, "accessLevel": p.access,
                    "customFields": fields(&p.custom_fields), "createdDate": p.created,
                })).collect::<Vec<_>>(),
            },
            "queuedNotifications": self.queue.len(),
        })
    }
}

/// Which custom-field list to read: the model's, so the simulator and the client name it once.
pub use espm_model::CustomFieldTarget;

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> CustomFields {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn same_seed_same_ids() {
        let run = |seed| {
            let mut w = World::new(seed);
            let a = w.create_customer(CustomerSpec::default()).unwrap();
            let p = w
                .share_property(a, None, None, Access::Read, Vec::new())
                .unwrap();
            (a, p)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn meter_accept_pulls_property_and_connection() {
        let mut w = World::new(1);
        let a = w.create_customer(CustomerSpec::default()).unwrap();
        let p = w
            .share_property(a, None, None, Access::Read, fields(&[("Lot", "9")]))
            .unwrap();
        let (m, mp) = w
            .share_meter(a, Some(p), None, Access::ReadWrite, Vec::new())
            .unwrap();
        assert_eq!(mp, p);
        assert!(w.has_pending_connection(a));
        w.answer_meter_share(m, true).unwrap();
        assert!(w.is_connected(a));
        assert_eq!(w.property_share(p), Some(Access::Read));
        assert_eq!(w.meter_share(m), Some(Access::ReadWrite));
        assert_eq!(
            w.custom_fields(CustomFieldTarget::Property(p)).unwrap(),
            fields(&[("Lot", "9")])
        );
        assert_eq!(w.answer_meter_share(m, true), Err(SimError::NotPending));
        w.check_invariants().unwrap();
    }

    #[test]
    fn test_environment_invites_and_custom_field_updates() {
        let mut w = World::new(5);
        let a = w
            .create_customer(CustomerSpec {
                password: Some("Pass-word1".into()),
                ..CustomerSpec::default()
            })
            .unwrap();
        let username = w.customers[&a].username.clone();
        assert_eq!(w.authenticate_customer(&username, "Pass-word1"), Some(a));
        assert_eq!(w.authenticate_customer(&username, "wrong"), None);
        let p = w.create_property(a, None).unwrap();
        let m = w.create_meter(p).unwrap();
        assert_eq!(
            w.invite_meter(a, 1, m, Access::Read, Vec::new()),
            Err(SimError::NotFound("Account 1 does not exist.".into()))
        );
        w.invite_meter(a, PROVIDER_ACCOUNT_ID, m, Access::Read, Vec::new())
            .unwrap();
        assert!(
            w.has_pending_connection(a),
            "the connection request comes along"
        );
        w.answer_meter_share(m, true).unwrap();
        assert!(w.test_env_unshare_refused(Target::Meter(m)));
        assert!(
            !w.test_env_unshare_refused(Target::Property(p)),
            "never shared"
        );
        // Custom fields of an accepted meter share: one SHAREUPDATE by the customer.
        let ids = w
            .submit_custom_fields(
                a,
                PROVIDER_ACCOUNT_ID,
                CustomFieldTarget::Meter(m),
                fields(&[("Meter Number", "7")]),
            )
            .unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(
            w.custom_fields(CustomFieldTarget::Meter(m)).unwrap(),
            fields(&[("Meter Number", "7")])
        );
        // The property is not shared: the owner is told so, anyone else is denied.
        let b = w.create_customer(CustomerSpec::default()).unwrap();
        assert!(matches!(
            w.submit_custom_fields(
                a,
                PROVIDER_ACCOUNT_ID,
                CustomFieldTarget::Property(p),
                Vec::new()
            ),
            Err(SimError::Rejected(_))
        ));
        assert_eq!(
            w.submit_custom_fields(
                b,
                PROVIDER_ACCOUNT_ID,
                CustomFieldTarget::Property(p),
                Vec::new()
            ),
            Err(SimError::AccessDenied)
        );
        assert_eq!(
            w.invite_property(b, PROVIDER_ACCOUNT_ID, p, Access::Read, Vec::new()),
            Err(SimError::AccessDenied)
        );
        w.check_invariants().unwrap();
    }

    #[test]
    fn reads_hand_out_once() {
        let mut w = World::new(3);
        w.bulk_notifications(5, &[]);
        let (_, peek) = w.read_notifications(false, true, None);
        assert_eq!(peek.notifications.len(), 5);
        let (r, got) = w.read_notifications(true, true, None);
        assert_eq!(got.notifications.len(), 5);
        let (_, again) = w.read_notifications(true, true, None);
        assert!(again.notifications.is_empty());
        w.settle_read(r, true);
        assert_eq!(w.ledger().summary().delivered, 5);
        w.check_invariants().unwrap();
    }

    #[test]
    fn a_trigger_answers_between_pages_and_shifts_the_next_one() {
        let mut w = World::new(4);
        let mut ids = Vec::new();
        for _ in 0..(PAGE_SIZE + 1) {
            let a = w.create_customer(CustomerSpec::default()).unwrap();
            w.request_connection(a, Vec::new()).unwrap();
            ids.push(a);
        }
        w.arm_pending_trigger(PendingTrigger {
            list: PendingListKind::Connection,
            after_page: 1,
            id: ids[0],
            accept: false,
        })
        .unwrap();
        let page1 = w.pending_accounts_page(1);
        assert_eq!(page1.accounts.len(), PAGE_SIZE);
        // Another list's page does not fire it.
        assert!(w
            .pending_page_served(PendingListKind::MeterShare, 1)
            .is_empty());
        let fired = w.pending_page_served(PendingListKind::Connection, 1);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].1, Ok(()));
        assert!(w.pending_triggers().is_empty(), "one-shot");
        // The entry that was first on page 2 moved onto page 1, which the walker already has.
        let page2 = w.pending_accounts_page(2);
        assert!(page2.accounts.is_empty());
        assert!(w.has_pending_connection(ids[PAGE_SIZE]));
        assert!(w
            .arm_pending_trigger(PendingTrigger {
                list: PendingListKind::Connection,
                after_page: 0,
                id: ids[1],
                accept: true,
            })
            .is_err());
        w.check_invariants().unwrap();
    }
}
