//! `GET /property/{id}`: one property, PM's `propertyType` (the same type as a share's
//! `<propertyInfo>`) under the root `<property>`.

use crate::pending::PropertyInfo;

/// `<property>`: name, address, primary function, gross floor area, ... (`xs:all`: any order).
pub type Property = PropertyInfo;

impl crate::PmDocument for PropertyInfo {
    const ROOT: &'static str = "property";
}
