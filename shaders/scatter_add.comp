#version 450
// ${NAME}: scatter-add of ${VALUES} values into ${SIZE} elements; stores ${STORES}
// DETERMINISTIC: one thread per output sums, in index order, every value whose index names it.
// Otherwise: one thread per value adds it to its target with an atomic compare-and-swap loop
// (the outputs were zeroed by the dispatch before); the order of additions may vary.
#define DETERMINISTIC ${DETERMINISTIC}
layout(local_size_x = ${LOCAL_SIZE}) in;

const int EXTENT = ${EXTENT};
const int COUNT = ${COUNT};
const int INNER = ${INNER};

${BUFFERS}
${HELPERS}
${FUNCTIONS}
int target_position(int j) {
    int position = load_index(j);
    position = position < 0 ? position + EXTENT : position;
    return clamp(position, 0, EXTENT - 1);
}

void main() {
    int i = int((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * ${LOCAL_SIZE}u + gl_LocalInvocationID.x);
#if DETERMINISTIC
    if (i >= ${SIZE}) {
        return;
    }
    int outer = i / (EXTENT * INNER);
    int position = (i / INNER) % EXTENT;
    int inner = i % INNER;
    float acc = 0.0;
    for (int j = 0; j < COUNT; j++) {
        if (target_position(j) == position) {
            acc += load_values((outer * COUNT + j) * INNER + inner);
        }
    }
    store_output(i, acc);
#else
    if (i >= ${VALUES}) {
        return;
    }
    int outer = i / (COUNT * INNER);
    int j = (i / INNER) % COUNT;
    int inner = i % INNER;
    accumulate((outer * EXTENT + target_position(j)) * INNER + inner, load_values(i));
#endif
}
