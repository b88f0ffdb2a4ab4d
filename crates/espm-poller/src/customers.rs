//! Enrichment of the pending walks' events: share events carry their customer's username and
//! organisation, which only PM's `GET /customer/{id}` gives, and their property's id, name,
//! address (and, for property shares, gross floor area) from `GET /property/{id}`.
//!
//! The invariant: enrichment never holds an event back longer than [`CustomerLookup::budget`]
//! and never drops one. Answers are cached in the journal for [`CustomerLookup::ttl`] (an expired
//! entry is looked up again the next time an event needs it); a lookup that fails, or is not done
//! when the budget runs out, leaves its events without `customer` and flagged
//! `enrichment: "unavailable"`. Failures are not cached: the next event asks PM again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use espm_events::{
    customer_to_enrich, enrich_customer, enrich_property, property_data, property_to_enrich,
    CloudEvent, CustomerData, PropertyData,
};
use espm_journal::{CachedCustomer, CachedProperty};

use crate::Poller;

/// How events get their customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerLookup {
    /// How long an answer of `GET /customer/{id}` is used before PM is asked again.
    pub ttl: Duration,
    /// The longest one list's walk waits for its lookups, all together, before it emits the
    /// events still waiting without their customer.
    pub budget: Duration,
}

impl Default for CustomerLookup {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(86_400),
            budget: Duration::from_secs(5),
        }
    }
}

impl Poller {
    /// Give every event that names a customer (see [`customer_to_enrich`]) that customer, from
    /// the journal's cache or PM; flag those whose lookup failed. Never fails.
    pub(crate) async fn enrich_customers(
        &self,
        events: &mut [CloudEvent],
        deadline: tokio::time::Instant,
    ) {
        let ids: BTreeSet<i64> = events.iter().filter_map(customer_to_enrich).collect();
        if ids.is_empty() {
            return;
        }
        let account = self.account().to_string();
        let scope = self.cfg.scope.clone();
        let wanted: Vec<i64> = ids.iter().copied().collect();
        let cached = match self
            .journal
            .call(move |j| j.cached_customers(&scope, &wanted))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(account = %account, error = %e, "reading the customer cache failed; asking PM");
                BTreeMap::new()
            }
        };
        let now = SystemTime::now();
        let mut known: BTreeMap<i64, CustomerData> = BTreeMap::new();
        let mut fetched = Vec::new();
        for id in ids {
            if let Some(c) = cached
                .get(&id)
                .filter(|c| c.is_fresh(self.customers.ttl, now))
            {
                known.insert(id, c.customer.clone());
                self.count_lookup("cached");
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(account = %account, customer = id, budget = ?self.customers.budget, "no time left for this customer's lookup; its events go out flagged enrichment=unavailable");
                self.count_lookup("failed");
                continue;
            }
            let outcome = tokio::time::timeout_at(deadline, self.client.customer(id)).await;
            match outcome {
                Ok(Ok(c)) => {
                    let customer = CustomerData::from_pm(&c);
                    fetched.push((
                        id,
                        CachedCustomer {
                            customer: customer.clone(),
                            fetched_at: SystemTime::now(),
                        },
                    ));
                    known.insert(id, customer);
                    self.count_lookup("fetched");
                }
                Ok(Err(e)) => {
                    tracing::warn!(account = %account, customer = id, error = %e, "customer lookup failed; its events go out flagged enrichment=unavailable");
                    self.count_lookup("failed");
                }
                Err(_) => {
                    tracing::warn!(account = %account, customer = id, budget = ?self.customers.budget, "customer lookups took too long; events go out flagged enrichment=unavailable");
                    self.count_lookup("failed");
                }
            }
        }
        if !fetched.is_empty() {
            let scope = self.cfg.scope.clone();
            if let Err(e) = self
                .journal
                .call(move |j| j.store_customers(&scope, &fetched))
                .await
            {
                // The events still carry what PM said; only the next lookup is not saved.
                tracing::warn!(account = %account, error = %e, "caching customers failed");
            }
        }
        for event in events.iter_mut() {
            if let Some(id) = customer_to_enrich(event) {
                enrich_customer(event, known.get(&id));
            }
        }
    }

    /// Give every share event its property (see [`property_to_enrich`]), from the journal's
    /// cache (same TTL as customers) or PM, by `deadline`; flag those whose lookup failed.
    /// Never fails.
    pub(crate) async fn enrich_properties(
        &self,
        events: &mut [CloudEvent],
        deadline: tokio::time::Instant,
    ) {
        let ids: BTreeSet<i64> = events.iter().filter_map(property_to_enrich).collect();
        if ids.is_empty() {
            return;
        }
        let account = self.account().to_string();
        let scope = self.cfg.scope.clone();
        let wanted: Vec<i64> = ids.iter().copied().collect();
        let cached = match self
            .journal
            .call(move |j| j.cached_properties(&scope, &wanted))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(account = %account, error = %e, "reading the property cache failed; asking PM");
                BTreeMap::new()
            }
        };
        let now = SystemTime::now();
        let mut known: BTreeMap<i64, PropertyData> = BTreeMap::new();
        let mut fetched = Vec::new();
        for id in ids {
            if let Some(c) = cached
                .get(&id)
                .filter(|c| c.is_fresh(self.customers.ttl, now))
            {
                known.insert(id, c.property.clone());
                self.count_property_lookup("cached");
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(account = %account, property = id, "no time left for this property's lookup; its events go out flagged enrichment=unavailable");
                self.count_property_lookup("failed");
                continue;
            }
            match tokio::time::timeout_at(deadline, self.client.property(id)).await {
                Ok(Ok(p)) => {
                    let property = property_data(id, &p);
                    fetched.push((
                        id,
                        CachedProperty {
                            property: property.clone(),
                            fetched_at: SystemTime::now(),
                        },
                    ));
                    known.insert(id, property);
                    self.count_property_lookup("fetched");
                }
                Ok(Err(e)) => {
                    tracing::warn!(account = %account, property = id, error = %e, "property lookup failed; its events go out flagged enrichment=unavailable");
                    self.count_property_lookup("failed");
                }
                Err(_) => {
                    tracing::warn!(account = %account, property = id, "property lookups took too long; events go out flagged enrichment=unavailable");
                    self.count_property_lookup("failed");
                }
            }
        }
        if !fetched.is_empty() {
            let scope = self.cfg.scope.clone();
            if let Err(e) = self
                .journal
                .call(move |j| j.store_properties(&scope, &fetched))
                .await
            {
                tracing::warn!(account = %account, error = %e, "caching properties failed");
            }
        }
        for event in events.iter_mut() {
            if let Some(id) = property_to_enrich(event) {
                enrich_property(event, known.get(&id));
            }
        }
    }

    fn count_property_lookup(&self, outcome: &'static str) {
        metrics::counter!("espm_bridge_property_lookups_total", "account" => self.account().to_string(), "outcome" => outcome).increment(1);
    }

    fn count_lookup(&self, outcome: &'static str) {
        metrics::counter!("espm_bridge_customer_lookups_total", "account" => self.account().to_string(), "outcome" => outcome).increment(1);
    }
}
