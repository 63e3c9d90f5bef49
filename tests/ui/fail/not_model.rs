// The derive goes on the entity's `Model`, not on some other struct.

#[derive(Clone, Debug, ormsync::Replicated)]
pub struct Customer {
    pub id: i64,
    pub name: String,
}

fn main() {}
