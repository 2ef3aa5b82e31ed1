//! A step as users write it — one flat map, `type:` beside the other fields — read in one pass
//! into [`StepSpec`]: the fields every step has, and the struct of its type for the rest. Values
//! are read where they stand, so an error keeps its line and column; a field that does not
//! belong to the step's type is refused with the fields it does have. The JSON Schema says the
//! same: one object shape per type (`oneOf`, keyed on `type`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::Schema;
use schemars::generate::SchemaSettings;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::ids::StepId;
use crate::spec::steps::{KINDS, StepKind, deserialize_kind, kind_schema, own_fields};
use crate::spec::{RetrySpec, StepGates, StepSpec, StepType};

/// The fields every step has, in the order messages list them.
const COMMON: &[&str] = &[
    "id",
    "type",
    "description",
    "needs",
    "when",
    "join",
    "inputs",
    "for_each",
    "retry",
    "timeout",
    "queue_timeout",
    "cost",
    "gates",
    "checks",
    "escalate",
];

impl<'de> Deserialize<'de> for StepSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = StepSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a step: a map with `id`, `type` and the fields of its type")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StepSpec, A::Error> {
        let mut common = Common::default();
        // Fields met before `type` are held until it is known (usually there are none).
        let mut early = Vec::new();
        let ty = loop {
            let Some(key) = map.next_key::<String>()? else {
                return Err(de::Error::missing_field("type"));
            };
            match common_field(&key) {
                Some("type") => break map.next_value::<StepType>()?,
                Some(name) => common.take(name, &mut map)?,
                None => early.push((key, map.next_value::<Value>()?)),
            }
        };
        let rest = Rest { map, ty, common: &mut common, early: early.into_iter(), value: None };
        let kind = deserialize_kind(ty, MapAccessDeserializer::new(rest))?;
        common.finish(kind)
    }
}

fn common_field(key: &str) -> Option<&'static str> {
    COMMON.iter().copied().find(|c| *c == key)
}

/// The fields every step has, as they are read.
#[derive(Default)]
struct Common {
    id: Option<StepId>,
    description: Option<Option<String>>,
    needs: Option<Vec<StepId>>,
    when: Option<Option<String>>,
    join: Option<Option<crate::spec::Join>>,
    inputs: Option<BTreeMap<String, Value>>,
    for_each: Option<Option<Value>>,
    retry: Option<Option<RetrySpec>>,
    timeout: Option<Option<Duration>>,
    queue_timeout: Option<Option<Duration>>,
    cost: Option<Option<crate::money::Money>>,
    gates: Option<Option<StepGates>>,
    checks: Option<Option<crate::checks::StepChecks>>,
    escalate: Option<Vec<crate::spec::Escalation>>,
}

/// A `timeout:` value (`30s`, `2m`…).
#[derive(Deserialize)]
#[serde(transparent)]
struct Humantime(#[serde(with = "humantime_serde")] Option<Duration>);

impl Common {
    /// Read the value of common field `name` (not `type`).
    fn take<'de, A: MapAccess<'de>>(&mut self, name: &'static str, map: &mut A) -> Result<(), A::Error> {
        fn set<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
            match slot.replace(value) {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        match name {
            "id" => set(&mut self.id, name, map.next_value()?),
            "description" => set(&mut self.description, name, map.next_value()?),
            "needs" => set(&mut self.needs, name, map.next_value()?),
            "when" => set(&mut self.when, name, map.next_value()?),
            "join" => set(&mut self.join, name, map.next_value()?),
            "inputs" => set(&mut self.inputs, name, map.next_value()?),
            "for_each" => set(&mut self.for_each, name, map.next_value()?),
            "retry" => set(&mut self.retry, name, map.next_value()?),
            "timeout" => set(&mut self.timeout, name, map.next_value::<Humantime>()?.0),
            "queue_timeout" => set(&mut self.queue_timeout, name, map.next_value::<Humantime>()?.0),
            "cost" => set(&mut self.cost, name, map.next_value()?),
            "gates" => set(&mut self.gates, name, map.next_value()?),
            "checks" => set(&mut self.checks, name, map.next_value()?),
            "escalate" => set(&mut self.escalate, name, map.next_value()?),
            _ => unreachable!("`{name}` is not a common field read here"),
        }
    }

    fn finish<E: de::Error>(self, kind: StepKind) -> Result<StepSpec, E> {
        Ok(StepSpec {
            id: self.id.ok_or_else(|| E::missing_field("id"))?,
            kind,
            description: self.description.flatten(),
            needs: self.needs.unwrap_or_default(),
            when: self.when.flatten(),
            join: self.join.flatten(),
            inputs: self.inputs.unwrap_or_default(),
            for_each: self.for_each.flatten(),
            retry: self.retry.flatten(),
            timeout: self.timeout.flatten(),
            queue_timeout: self.queue_timeout.flatten(),
            cost: self.cost.flatten(),
            gates: self.gates.flatten(),
            checks: self.checks.flatten(),
            escalate: self.escalate.unwrap_or_default(),
        })
    }
}

/// The rest of a step's map once its type is known, as the type's struct sees it: only the
/// type's own fields (held early ones first); common fields are read into `common` on the way.
struct Rest<'c, A> {
    map: A,
    ty: StepType,
    common: &'c mut Common,
    early: std::vec::IntoIter<(String, Value)>,
    /// The value of the early field just handed out.
    value: Option<Value>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Rest<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        if let Some((key, value)) = self.early.next() {
            if let Some(name) = common_field(&key) {
                return Err(de::Error::duplicate_field(name));
            }
            check_own_field(self.ty, &key)?;
            self.value = Some(value);
            return seed.deserialize(IntoDeserializer::<A::Error>::into_deserializer(key)).map(Some);
        }
        let mut seed = Some(seed);
        loop {
            match self.map.next_key_seed(KeySeed { ty: self.ty, seed: &mut seed })? {
                None => return Ok(None),
                Some(Key::Own(key)) => return Ok(Some(key)),
                Some(Key::Common(name)) => self.common.take(name, &mut self.map)?,
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value).map_err(de::Error::custom),
            None => self.map.next_value_seed(seed),
        }
    }
}

enum Key<K> {
    Common(&'static str),
    Own(K),
}

/// Reads a key in place (so an error points at it): a common field, or one of the type's own,
/// handed to the type's field seed. The seed stays in its slot until an own field uses it.
struct KeySeed<'s, K> {
    ty: StepType,
    seed: &'s mut Option<K>,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, K> {
    type Value = Key<K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeySeed<'_, K> {
    type Value = Key<K::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        match common_field(key) {
            Some("type") => return Err(E::duplicate_field("type")),
            Some(name) => return Ok(Key::Common(name)),
            None => {}
        }
        check_own_field(self.ty, key)?;
        let seed = self.seed.take().expect("a key seed is used for one key");
        seed.deserialize(key.into_deserializer()).map(Key::Own)
    }
}

/// Refuse `key` unless it is one of the own fields of a `ty` step, saying which fields are.
fn check_own_field<E: de::Error>(ty: StepType, key: &str) -> Result<(), E> {
    let own = own_fields(ty);
    if own.contains(&key) {
        return Ok(());
    }
    let a_step = format!("{} `{}` step", if starts_with_vowel_sound(ty.name()) { "an" } else { "a" }, ty.name());
    let has = match own {
        [] => format!("{a_step} has the fields of every step: {}", list(COMMON)),
        _ => format!("{a_step} has {} and the fields of every step: {}", list(own), list(COMMON)),
    };
    if KINDS.iter().any(|&other| own_fields(other).contains(&key)) {
        return Err(E::custom(format!("`{key}` is not a field of {a_step} ({has})")));
    }
    let close = own.iter().chain(COMMON).find(|f| edit_distance(f, key) <= 2);
    let hint = close.map(|f| format!(", did you mean `{f}`?")).unwrap_or_default();
    Err(E::custom(format!("unknown field `{key}`{hint} ({has})")))
}

/// For "an `api_call` step", "an `llm` step", "a `code` step".
fn starts_with_vowel_sound(name: &str) -> bool {
    name.starts_with(['a', 'e', 'i', 'o', 'u']) || name == "llm"
}

fn list(fields: &[&str]) -> String {
    fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
}

/// Levenshtein distance, for "did you mean" (field names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `#[schemars(transform)]` of [`StepSpec`]: its derived schema holds the common fields; this
/// turns it into one closed object shape per type — the common fields, `type` set to the type's
/// name, and the type's own fields — so an editor checks a step against the shape of its type.
pub(crate) fn one_shape_per_type(schema: &mut Schema) {
    let common = schema.clone();
    let common_props = common.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    let common_required: Vec<Value> = common.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
    // The types' own schemas are self-contained (a transform has no access to the caller's
    // generator and its `$defs`).
    let mut generator = SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true).into_generator();
    let shapes: Vec<Value> = KINDS
        .iter()
        .map(|&ty| {
            let own = kind_schema(ty, &mut generator);
            let mut properties = serde_json::Map::new();
            let mut common_props = common_props.clone().into_iter();
            properties.extend(common_props.next()); // `id` first, then `type`
            properties.insert("type".into(), json!({ "const": ty.name() }));
            properties.extend(common_props);
            properties.extend(own.get("properties").and_then(Value::as_object).cloned().unwrap_or_default());
            let mut required = common_required.clone();
            required.push(json!("type"));
            required.extend(own.get("required").and_then(Value::as_array).cloned().unwrap_or_default());
            let mut shape = json!({
                "title": format!("{} step", ty.name()),
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
                "required": required,
            });
            if let Some(d) = own.get("description") {
                shape["description"] = d.clone();
            }
            shape
        })
        .collect();
    let mut out = json!({ "oneOf": shapes });
    if let Some(d) = common.get("description") {
        out["description"] = d.clone();
    }
    *schema = Schema::try_from(out).expect("an object is a schema");
}
