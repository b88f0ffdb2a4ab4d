//! The customer cache: who a PM customer is (username, organisation) as `GET /customer/{id}`
//! last answered, per provider account, so events can carry it without a PM call each.

#[allow(unused_imports)]
use super::*;

use espm_events::{CustomerData, PropertyData};

/// One cached answer of `GET /customer/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCustomer {
    /// Username and organisation.
    pub customer: CustomerData,
    /// When PM gave them.
    pub fetched_at: SystemTime,
}

impl CachedCustomer {
    /// Whether it is younger than `ttl` at `now` (an entry from the future counts as fresh).
    pub fn is_fresh(&self, ttl: Duration, now: SystemTime) -> bool {
        match now.duration_since(self.fetched_at) {
            Ok(age) => age < ttl,
            Err(_) => true,
        }
    }
}

impl Journal {
    /// The cached entries of these customers (of one provider account), fresh or not; customers
    /// never cached are absent.
    pub fn cached_customers(
        &self,
        scope: &Scope,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, CachedCustomer>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT username, organization, fetched_at FROM customers \
                 WHERE environment = ?1 AND account = ?2 AND customer_id = ?3",
            )
            .j()?;
        let mut out = BTreeMap::new();
        for &id in ids {
            let row = st
                .query_row(params![scope.environment, scope.account, id], |r| {
                    Ok(CachedCustomer {
                        customer: CustomerData {
                            username: r.get(0)?,
                            organization: r.get(1)?,
                        },
                        fetched_at: from_ms(r.get(2)?),
                    })
                })
                .optional()
                .j()?;
            if let Some(c) = row {
                out.insert(id, c);
            }
        }
        Ok(out)
    }

    /// Store (replace) what PM answered about these customers, in one transaction.
    pub fn store_customers(
        &self,
        scope: &Scope,
        customers: &[(i64, CachedCustomer)],
    ) -> Result<(), JournalError> {
        if customers.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO customers(environment, account, customer_id, username, \
                     organization, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT(environment, account, customer_id) DO UPDATE SET \
                     username = excluded.username, organization = excluded.organization, \
                     fetched_at = excluded.fetched_at",
                )
                .j()?;
            for (id, c) in customers {
                st.execute(params![
                    scope.environment,
                    scope.account,
                    id,
                    c.customer.username,
                    c.customer.organization,
                    to_ms(c.fetched_at)
                ])
                .j()?;
            }
            Ok(())
        })
    }
}

/// One cached answer of `GET /property/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedProperty {
    /// What share events carry about the property.
    pub property: PropertyData,
    /// When PM gave it.
    pub fetched_at: SystemTime,
}

impl CachedProperty {
    /// Whether it is younger than `ttl` at `now` (an entry from the future counts as fresh).
    pub fn is_fresh(&self, ttl: Duration, now: SystemTime) -> bool {
        match now.duration_since(self.fetched_at) {
            Ok(age) => age < ttl,
            Err(_) => true,
        }
    }
}

impl Journal {
    /// The cached entries of these properties (of one provider account), fresh or not; an entry
    /// that no longer reads as [`PropertyData`] counts as absent (it is looked up again).
    pub fn cached_properties(
        &self,
        scope: &Scope,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, CachedProperty>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT data, fetched_at FROM properties \
                 WHERE environment = ?1 AND account = ?2 AND property_id = ?3",
            )
            .j()?;
        let mut out = BTreeMap::new();
        for &id in ids {
            let row: Option<(String, i64)> = st
                .query_row(params![scope.environment, scope.account, id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .j()?;
            if let Some((json, at)) = row {
                if let Ok(property) = serde_json::from_str::<PropertyData>(&json) {
                    out.insert(
                        id,
                        CachedProperty {
                            property,
                            fetched_at: from_ms(at),
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// Store (replace) what PM answered about these properties, in one transaction.
    pub fn store_properties(
        &self,
        scope: &Scope,
        properties: &[(i64, CachedProperty)],
    ) -> Result<(), JournalError> {
        if properties.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO properties(environment, account, property_id, data, fetched_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT(environment, account, property_id) DO UPDATE SET \
                     data = excluded.data, fetched_at = excluded.fetched_at",
                )
                .j()?;
            for (id, c) in properties {
                // A struct of strings and finite numbers: serialising cannot fail.
                let json = serde_json::to_string(&c.property).unwrap_or_default();
                st.execute(params![
                    scope.environment,
                    scope.account,
                    id,
                    json,
                    to_ms(c.fetched_at)
                ])
                .j()?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(username: &str, organization: Option<&str>, fetched_at: SystemTime) -> CachedCustomer {
        CachedCustomer {
            customer: CustomerData {
                username: Some(username.into()),
                organization: organization.map(str::to_string),
            },
            fetched_at,
        }
    }

    #[test]
    fn customers_are_cached_per_account_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let a = Scope::new("sim", "a");
        let b = Scope::new("sim", "b");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(j.cached_customers(&a, &[1, 2]).unwrap().is_empty());
        j.store_customers(
            &a,
            &[
                (1, entry("one", Some("ACME"), t)),
                (2, entry("two", None, t)),
            ],
        )
        .unwrap();
        let got = j.cached_customers(&a, &[1, 2, 3]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[&1], entry("one", Some("ACME"), t));
        assert_eq!(got[&2].customer.organization, None);
        assert!(
            j.cached_customers(&b, &[1]).unwrap().is_empty(),
            "per account"
        );

        let later = t + Duration::from_secs(60);
        j.store_customers(&a, &[(1, entry("one", Some("ACME Corp"), later))])
            .unwrap();
        assert_eq!(
            j.cached_customers(&a, &[1]).unwrap()[&1],
            entry("one", Some("ACME Corp"), later)
        );
        // Survives a reopen.
        drop(j);
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        assert_eq!(j.cached_customers(&a, &[1]).unwrap()[&1].fetched_at, later);
    }

    #[test]
    fn properties_are_cached_per_account_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let a = Scope::new("sim", "a");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = |name: &str, at| CachedProperty {
            property: PropertyData {
                property_id: 5,
                name: Some(name.into()),
                ..PropertyData::default()
            },
            fetched_at: at,
        };
        j.store_properties(&a, &[(5, p("Harbor", t))]).unwrap();
        assert_eq!(
            j.cached_properties(&a, &[5, 6]).unwrap()[&5],
            p("Harbor", t)
        );
        assert!(j
            .cached_properties(&Scope::new("sim", "b"), &[5])
            .unwrap()
            .is_empty());
        let later = t + Duration::from_secs(1);
        j.store_properties(&a, &[(5, p("Harbor Tower", later))])
            .unwrap();
        assert_eq!(
            j.cached_properties(&a, &[5]).unwrap()[&5],
            p("Harbor Tower", later)
        );
        assert!(p("x", t).is_fresh(Duration::from_secs(2), later));
        assert!(!p("x", t).is_fresh(Duration::from_secs(1), later));
    }

    #[test]
    fn freshness_is_age_below_the_ttl() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let c = entry("u", None, t);
        let ttl = Duration::from_secs(60);
        assert!(c.is_fresh(ttl, t));
        assert!(c.is_fresh(ttl, t + Duration::from_secs(59)));
        assert!(!c.is_fresh(ttl, t + Duration::from_secs(60)));
        assert!(
            c.is_fresh(ttl, t - Duration::from_secs(5)),
            "clock stepped back"
        );
        assert!(!c.is_fresh(Duration::ZERO, t));
    }
}
