#version 450
// ${NAME}: ${REDUCTION} of ${REDUCED} elements for each of ${OUTPUTS} outputs; stores ${STORES}
// lift() turns an element into an accumulator, combine() merges two; store_output() finishes it.
// One workgroup per output: each lane folds a strided share, then a shared-memory tree combines the
// lanes. With SERIAL, one thread folds a whole (short) reduction instead; with QUADS as well, it
// loads four adjacent elements at a time (load_quad), on CPU drivers where a vec4 fetch costs a float's.
#define SERIAL ${SERIAL}
#define QUADS ${QUADS}
layout(local_size_x = ${LOCAL_SIZE}) in;

${BUFFERS}
${HELPERS}
${FUNCTIONS}
${TYPE} lift(${INPUT} x) {
    return ${LIFT};
}

void combine(inout ${TYPE} value, inout int position, ${TYPE} other, int other_position) {
    ${COMBINE}
}

#if SERIAL
void main() {
    int output_index = int((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * ${LOCAL_SIZE}u + gl_LocalInvocationID.x);
    if (output_index >= ${OUTPUTS}) {
        return;
    }
    ${TYPE} value = ${IDENTITY};
    int position = ${REDUCED};
#if QUADS
    for (int q = 0; q < ${REDUCED} / 4; q++) {
        ${INPUT4} four = load_quad(output_index, q);
        for (int e = 0; e < 4; e++) {
            combine(value, position, lift(four[e]), 4 * q + e);
        }
    }
#else
    for (int r = 0; r < ${REDUCED}; r++) {
        combine(value, position, lift(load_input(output_index, r)), r);
    }
#endif
    store_output(output_index, value, position);
}
#else
shared ${TYPE} partial_value[${LOCAL_SIZE}];
shared int partial_position[${LOCAL_SIZE}];

void main() {
    int output_index = int(gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x);
    if (output_index >= ${OUTPUTS}) {
        return;
    }
    int lane = int(gl_LocalInvocationID.x);
    ${TYPE} value = ${IDENTITY};
    int position = ${REDUCED};
    for (int r = lane; r < ${REDUCED}; r += ${LOCAL_SIZE}) {
        combine(value, position, lift(load_input(output_index, r)), r);
    }
    partial_value[lane] = value;
    partial_position[lane] = position;
    barrier();
    for (int stride = ${LOCAL_SIZE} / 2; stride > 0; stride /= 2) {
        if (lane < stride) {
            combine(value, position, partial_value[lane + stride], partial_position[lane + stride]);
            partial_value[lane] = value;
            partial_position[lane] = position;
        }
        barrier();
    }
    if (lane == 0) {
        store_output(output_index, value, position);
    }
}
#endif
