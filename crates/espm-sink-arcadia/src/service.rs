//! The I/O: one planned [`Call`] against Arcadia, and the classification of its failure.

use std::time::Duration;

use espm_arcadia::{
    status, Account, AccountQuery, AccountRef, ArcadiaClient, ArcadiaError, SetProperty,
};

use crate::request_builder::{Call, Mapping};

/// Page size of the account search behind a disconnect.
const SEARCH_PAGE: u64 = 100;

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// 400, 401, 403, an unexpected 404 or an unreadable answer: retrying cannot help.
    Permanent(String),
    /// 429, 5xx, timeouts, connection failures: try again (after `retry_after` if given).
    Transient {
        /// What happened.
        reason: String,
        /// Arcadia's `Retry-After`.
        retry_after: Option<Duration>,
        /// Metric label, e.g. `http_429`.
        label: String,
    },
}

fn classify(what: &str, e: ArcadiaError) -> CallError {
    if e.is_transient() {
        CallError::Transient {
            reason: format!("{what}: {e}"),
            retry_after: e.retry_after(),
            label: e.label(),
        }
    } else {
        CallError::Permanent(format!("{what}: {e}"))
    }
}

/// Runs planned calls with one Arcadia client.
#[derive(Debug, Clone)]
pub struct ArcadiaService {
    client: ArcadiaClient,
}

impl ArcadiaService {
    /// Wrap a client.
    pub fn new(client: ArcadiaClient) -> Self {
        Self { client }
    }

    /// The client, for direct calls (the operator CLI).
    pub fn client(&self) -> &ArcadiaClient {
        &self.client
    }

    /// Run one call. `mapping` tells our accounts from others during a disconnect.
    pub async fn run(&self, call: &Call, mapping: &Mapping) -> Result<(), CallError> {
        match call {
            Call::Upsert(account) => {
                self.client
                    .upsert_account(account)
                    .await
                    .map(drop)
                    .map_err(|e| {
                        classify(
                            &format!(
                                "upsert {}",
                                account.provider_account_id.as_deref().unwrap_or("?")
                            ),
                            e,
                        )
                    })
            }
            Call::Set { account, property } => self
                .client
                .set_property(account, property)
                .await
                .map(drop)
                .map_err(|e| classify(&format!("set {} on {account}", property.key_name), e)),
            Call::SetIfMirrored { account, property } => {
                match self.client.set_property(account, property).await {
                    Ok(_) => Ok(()),
                    // Never mirrored: nothing to change.
                    Err(e) if e.status() == Some(404) => Ok(()),
                    Err(e) => Err(classify(
                        &format!("set {} on {account}", property.key_name),
                        e,
                    )),
                }
            }
            Call::Refresh(account) => self.refresh(account).await,
            Call::Inactivate { account } => self.inactivate(account).await,
            Call::InactivateCustomer { customer_org_id } => {
                self.inactivate_customer(customer_org_id, mapping).await
            }
        }
    }

    async fn refresh(&self, account: &Account) -> Result<(), CallError> {
        let Some(pid) = account.provider_account_id.clone() else {
            return Err(CallError::Permanent(
                "refresh without a providerAccountId".into(),
            ));
        };
        let what = format!("refresh {pid}");
        match self.client.get_account(&AccountRef::Provider(pid)).await {
            Ok(_) => {}
            // Never mirrored: a refresh does not create it.
            Err(e) if e.status() == Some(404) => return Ok(()),
            Err(e) => return Err(classify(&what, e)),
        }
        self.client
            .upsert_account(account)
            .await
            .map(drop)
            .map_err(|e| classify(&what, e))
    }

    async fn inactivate(&self, account: &AccountRef) -> Result<(), CallError> {
        match self
            .client
            .set_property(account, &SetProperty::new("status", status::INACTIVE))
            .await
        {
            Ok(_) => Ok(()),
            // Never mirrored (the share was rejected, or mirrored by an older config): done.
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(classify(&format!("inactivate {account}"), e)),
        }
    }

    async fn inactivate_customer(&self, org: &str, mapping: &Mapping) -> Result<(), CallError> {
        let mut page_start = 0u64;
        loop {
            let page = self
                .client
                .list_accounts(&AccountQuery {
                    search: Some(org.to_string()),
                    search_on: Some("customerOrgId".into()),
                    page_start,
                    page_count: SEARCH_PAGE,
                })
                .await
                .map_err(|e| classify(&format!("search accounts of customer {org}"), e))?;
            let n = page.results.len() as u64;
            for a in &page.results {
                // The search matches substrings: keep exact matches of accounts we mirrored.
                let ours = a
                    .provider_account_id
                    .as_deref()
                    .and_then(|p| mapping.property_id_of(p))
                    .is_some();
                let live = !matches!(
                    a.status.as_deref(),
                    Some(status::INACTIVE | status::DELETED)
                );
                if a.customer_org_id.as_deref() == Some(org) && ours && live {
                    if let Some(pid) = &a.provider_account_id {
                        self.inactivate(&AccountRef::Provider(pid.clone())).await?;
                    }
                }
            }
            page_start += n;
            if n == 0 || page_start >= page.count {
                return Ok(());
            }
        }
    }
}
