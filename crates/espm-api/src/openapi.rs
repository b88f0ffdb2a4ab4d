//! The OpenAPI 3.1 document, generated from the Rust types (schemars, JSON Schema 2020-12, the
//! dialect OpenAPI 3.1 uses) and the one table of operations below. Checked in as
//! `schemas/openapi.json` and served at `/api/v1/openapi.json`.

use espm_command::{
    AnswerBody, CommandView, CreateCustomerBody, DisconnectBody, PendingKind, ProblemKind,
    UnshareBody,
};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::routes::{CustomerList, CustomerView, PendingList};

/// A path parameter or query parameter.
struct Param {
    name: &'static str,
    location: &'static str,
    required: bool,
    schema: fn() -> Value,
    description: &'static str,
}

/// One operation of the API.
struct Operation {
    id: &'static str,
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    params: &'static [Param],
    body: Option<fn(&mut SchemaGenerator) -> Value>,
    ok_status: &'static str,
    ok: fn(&mut SchemaGenerator) -> Value,
    /// Runs a command: takes `Idempotency-Key`.
    command: bool,
    problems: &'static [ProblemKind],
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

fn account_schema() -> Value {
    json!({"type": "string", "minLength": 1, "examples": ["main"]})
}
fn id_schema() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 1})
}
fn kind_schema() -> Value {
    let kinds: Vec<&str> = PendingKind::ALL.iter().map(|k| k.as_str()).collect();
    json!({"type": "string", "enum": kinds})
}
fn command_id_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": espm_command::ID_MAX_LEN, "pattern": "^[!-~]+$"})
}

const ACCOUNT: Param = Param {
    name: "account",
    location: "path",
    required: true,
    schema: account_schema,
    description: "The configured name of the provider account (`accounts[].name`).",
};

const PM_CALL: &[ProblemKind] = &[
    ProblemKind::InvalidCommand,
    ProblemKind::Unauthorized,
    ProblemKind::UnknownAccount,
    ProblemKind::IdReused,
    ProblemKind::PmRejected,
    ProblemKind::PmAccessDenied,
    ProblemKind::PmNotFound,
    ProblemKind::PmRateLimited,
    ProblemKind::PmUnavailable,
    ProblemKind::PmUnreachable,
    ProblemKind::PmUnauthorized,
    ProblemKind::JournalUnavailable,
    ProblemKind::Interrupted,
];

const PM_READ: &[ProblemKind] = &[
    ProblemKind::InvalidCommand,
    ProblemKind::Unauthorized,
    ProblemKind::UnknownAccount,
    ProblemKind::PmAccessDenied,
    ProblemKind::PmNotFound,
    ProblemKind::PmRateLimited,
    ProblemKind::PmUnavailable,
    ProblemKind::PmUnreachable,
    ProblemKind::PmUnauthorized,
];

const OPERATIONS: &[Operation] = &[
    Operation {
        id: "listPending",
        method: "get",
        path: "/api/v1/accounts/{account}/pending",
        summary: "Pending connection, property and meter requests from the journal's latest walk of PM's lists (no PM call).",
        params: &[
            ACCOUNT,
            Param { name: "kind", location: "query", required: false, schema: kind_schema, description: "Only this list." },
            Param { name: "customerId", location: "query", required: false, schema: id_schema, description: "Only requests of this customer account." },
        ],
        body: None,
        ok_status: "200",
        ok: schema::<PendingList>,
        command: false,
        problems: &[ProblemKind::InvalidCommand, ProblemKind::Unauthorized, ProblemKind::UnknownAccount, ProblemKind::JournalUnavailable],
    },
    Operation {
        id: "answerRequest",
        method: "post",
        path: "/api/v1/accounts/{account}/pending/{kind}/{requestId}/answer",
        summary: "Accept or reject one pending connection, property share or meter share. A request PM already resolved is a success with outcome nothing_to_do.",
        params: &[
            ACCOUNT,
            Param { name: "kind", location: "path", required: true, schema: kind_schema, description: "The pending list." },
            Param { name: "requestId", location: "path", required: true, schema: id_schema, description: "The request's id: the customer's account id, the property id or the meter id." },
        ],
        body: Some(schema::<AnswerBody>),
        ok_status: "200",
        ok: schema::<CommandView>,
        command: true,
        problems: PM_CALL,
    },
    Operation {
        id: "disconnectCustomer",
        method: "post",
        path: "/api/v1/accounts/{account}/customers/{customerId}/disconnect",
        summary: "Disconnect from a customer; keepShares is required. A customer not connected is a success with outcome nothing_to_do.",
        params: &[
            ACCOUNT,
            Param { name: "customerId", location: "path", required: true, schema: id_schema, description: "The customer's account id." },
        ],
        body: Some(schema::<DisconnectBody>),
        ok_status: "200",
        ok: schema::<CommandView>,
        command: true,
        problems: PM_CALL,
    },
    Operation {
        id: "unshareProperty",
        method: "post",
        path: "/api/v1/accounts/{account}/properties/{propertyId}/unshare",
        summary: "Stop receiving a property's share (PM removes the customer's meter shares on it too). A share already gone is a success with outcome nothing_to_do.",
        params: &[
            ACCOUNT,
            Param { name: "propertyId", location: "path", required: true, schema: id_schema, description: "The property." },
        ],
        body: Some(schema::<UnshareBody>),
        ok_status: "200",
        ok: schema::<CommandView>,
        command: true,
        problems: PM_CALL,
    },
    Operation {
        id: "unshareMeter",
        method: "post",
        path: "/api/v1/accounts/{account}/meters/{meterId}/unshare",
        summary: "Stop receiving a meter's share. A share already gone is a success with outcome nothing_to_do.",
        params: &[
            ACCOUNT,
            Param { name: "meterId", location: "path", required: true, schema: id_schema, description: "The meter." },
        ],
        body: Some(schema::<UnshareBody>),
        ok_status: "200",
        ok: schema::<CommandView>,
        command: true,
        problems: PM_CALL,
    },
    Operation {
        id: "createCustomer",
        method: "post",
        path: "/api/v1/accounts/{account}/customers",
        summary: "Create a customer account (PM's POST /customer; PM connects it to you). The password is sent to PM only.",
        params: &[ACCOUNT],
        body: Some(schema::<CreateCustomerBody>),
        ok_status: "201",
        ok: schema::<CommandView>,
        command: true,
        problems: PM_CALL,
    },
    Operation {
        id: "listCustomers",
        method: "get",
        path: "/api/v1/accounts/{account}/customers",
        summary: "The customers connected to the account (PM's GET /customer/list).",
        params: &[ACCOUNT],
        body: None,
        ok_status: "200",
        ok: schema::<CustomerList>,
        command: false,
        problems: PM_READ,
    },
    Operation {
        id: "getCustomer",
        method: "get",
        path: "/api/v1/accounts/{account}/customers/{customerId}",
        summary: "One connected customer, with its username (PM's GET /customer/{id}, the only place PM gives it). The answer also refreshes the customer cache that events are enriched from.",
        params: &[
            ACCOUNT,
            Param { name: "customerId", location: "path", required: true, schema: id_schema, description: "The customer's account id." },
        ],
        body: None,
        ok_status: "200",
        ok: schema::<CustomerView>,
        command: false,
        problems: PM_READ,
    },
    Operation {
        id: "getCommand",
        method: "get",
        path: "/api/v1/commands/{commandId}",
        summary: "The state and result of one command, by id.",
        params: &[Param { name: "commandId", location: "path", required: true, schema: command_id_schema, description: "The command's id (its Idempotency-Key)." }],
        body: None,
        ok_status: "200",
        ok: schema::<CommandView>,
        command: false,
        problems: &[ProblemKind::InvalidCommand, ProblemKind::Unauthorized, ProblemKind::UnknownCommand, ProblemKind::JournalUnavailable],
    },
];

/// The operation ids, in document order.
pub fn operation_ids() -> Vec<&'static str> {
    OPERATIONS.iter().map(|o| o.id).collect()
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details. `type` names the problem (see config/API.md); a failed command also carries `commandId` and `command`.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "commandId": {"type": "string"},
            "command": {"$ref": "#/components/schemas/CommandView"},
            "pmStatus": {"type": "integer"},
            "pmErrors": {"type": "array", "items": {"type": "string"}},
        },
    })
}

/// The whole document.
pub fn openapi() -> Value {
    let mut g = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    // CommandView is referenced by the problem schema, so it is always a component.
    let _ = schema::<CommandView>(&mut g);
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut params: Vec<Value> = op
            .params
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "in": p.location, "required": p.required,
                    "description": p.description, "schema": (p.schema)(),
                })
            })
            .collect();
        if op.command {
            params.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "The command's id. A request repeated with the same key returns the first result without a second PM call; the same key with a different request is refused (id-reused). Without it, a fresh id is assigned.",
                "schema": command_id_schema(),
            }));
        }
        let mut responses = Map::new();
        responses.insert(
            op.ok_status.to_string(),
            json!({"description": "Success.", "content": {"application/json": {"schema": (op.ok)(&mut g)}}}),
        );
        let mut by_status: std::collections::BTreeMap<u16, Vec<&ProblemKind>> = Default::default();
        for k in op.problems {
            by_status.entry(k.status()).or_default().push(k);
        }
        for (status, kinds) in by_status {
            let names: Vec<String> = kinds.iter().map(|k| format!("`{}`", k.slug())).collect();
            let mut resp = json!({
                "description": format!("Problem: {}.", names.join(", ")),
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            });
            if status == 429 {
                resp["headers"] = json!({"Retry-After": {"description": "Seconds to wait, as PM said.", "schema": {"type": "integer"}}});
            }
            responses.insert(status.to_string(), resp);
        }
        let mut operation = json!({
            "operationId": op.id,
            "summary": op.summary,
            "parameters": params,
            "responses": responses,
        });
        if let Some(body) = op.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": body(&mut g)}},
            });
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    let mut schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "espm-bridge command API",
            "version": "1.0.0",
            "description": "Answer Portfolio Manager through the bridge: every command is journalled before its PM call, idempotent by its id, and announced by a command.completed or command.failed event (causationid = the command id). Errors are RFC 9457 problem details.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "One of the tokens in `[api] token_file` or `token_env`."}},
        },
    })
}

/// `config/API.md`: the operations and the problem types, from the same tables.
pub fn api_markdown() -> String {
    let mut out = String::from(
        "<!-- Generated by espm-api (`UPDATE_GENERATED=1 cargo test -p espm-api`); do not edit. -->\n\
         # The command API\n\n\
         Off unless `[api]` is configured (`listen`, and `token_file` or `token_env`: bearer tokens, one per \
         line, `NAME=TOKEN` to name the caller). The OpenAPI 3.1 document is `schemas/openapi.json`, \
         also served at `/api/v1/openapi.json`. Every command is journalled before its PM call; send \
         `Idempotency-Key` to make a retry return the first result without a second PM call. Each \
         command ends with a `gov.energystar.pm.command.completed` or `.failed` event whose \
         `causationid` is the command id. PM's own \"already so\" answers (a request already \
         resolved, a customer not connected, a share already gone) are successes with `outcome: \
         nothing_to_do`.\n\n## Operations\n\n| operationId | method | path | what it does |\n|---|---|---|---|\n",
    );
    for op in OPERATIONS {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} |\n",
            op.id,
            op.method.to_uppercase(),
            op.path,
            op.summary
        ));
    }
    out.push_str(
        "\n## Problem types\n\nErrors are RFC 9457 problem documents (`application/problem+json`); \
         `type` is this page's URL with the anchor below. A failed command also carries `commandId`, \
         `command`, and PM's `pmStatus` and `pmErrors` when PM answered. `retryable` problems may \
         succeed when the same command (same id) is sent again later: the bridge then checks PM \
         before calling it again.\n\n| type | status | title | retryable |\n|---|---|---|---|\n",
    );
    for k in ProblemKind::ALL {
        out.push_str(&format!(
            "| <a id=\"{0}\"></a>`{0}` | {1} | {2} | {3} |\n",
            k.slug(),
            k.status(),
            k.title(),
            if k.retryable() { "yes" } else { "no" }
        ));
    }
    out
}
