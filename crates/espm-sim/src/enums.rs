//! PM's enumerations for `POST /customer`, copied from the official XSDs (schema 26.0) in
//! `tests/xsd`; a test checks they still match the schema files.

/// `primaryBusinessType` (`account/account.xsd`).
pub const PRIMARY_BUSINESS: &[&str] = &[
    "Architecture/Design Firm",
    "Banking/Financial",
    "Commercial Real Estate",
    "Congregation/Faith-Based Organization",
    "Data Center",
    "Drinking Water Treatment/Distribution",
    "Education",
    "Energy Efficiency Program",
    "Entertainment/Recreation",
    "Food Service",
    "Government: Local (U.S.)",
    "Government: Outside U.S.",
    "Government: State (U.S.)",
    "Government: Federal (U.S.)",
    "Healthcare",
    "Hospitality",
    "Legal Services",
    "Manufacturing/Industrial",
    "Media",
    "Multifamily Housing",
    "Retail",
    "Senior Care",
    "Service and Product Provider/Consultant",
    "Transportation",
    "Utility",
    "Wastewater Treatment",
    "Other",
];

/// `typeOfEnergyStarPartner` (`account/account.xsd`).
pub const ENERGY_STAR_PARTNER_TYPES: &[&str] = &[
    "Associations",
    "Organizations that Own/Manage/Lease Buildings and Plants",
    "Service and Product Providers",
    "Small Businesses",
    "Utilities and Energy Efficiency Program Sponsors",
    "Other",
];

/// The `state` attribute of `addressType` (`common/address.xsd`): US states and territories, Canadian provinces.
pub const STATES: &[&str] = &[
    "AK", "AL", "AR", "AS", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "GU", "HI", "IA", "ID",
    "IL", "IN", "KS", "KY", "LA", "MA", "MD", "ME", "MH", "MI", "MN", "MO", "MP", "MS", "MT", "NC",
    "ND", "NE", "NH", "NJ", "NM", "NN", "NV", "NY", "OH", "OK", "OR", "PA", "PI", "PR", "RI", "SC",
    "SD", "TN", "TT", "TX", "UM", "UT", "VA", "VI", "VT", "WA", "WI", "WQ", "WV", "WY", "AB", "BC",
    "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT",
];

/// `countryList` (`common/address.xsd`): ISO 3166-1 alpha-2 codes.
pub const COUNTRIES: &[&str] = &[
    "US", "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GW", "GY", "HK", "HM", "HN",
    "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO",
    "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI",
    "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MK", "ML", "MM",
    "MN", "MO", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF",
    "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL",
    "PM", "PN", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD",
    "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY",
    "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UY", "UZ", "VA", "VC", "VE", "VG", "VN", "VU", "WF", "WS", "YE", "YT", "ZA",
    "ZM", "ZW",
];
