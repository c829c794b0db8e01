#version 450
// ${NAME}: ${SIZE} elements, four adjacent ones a thread (thread q: elements 4q .. 4q + 3); stores ${STORES}
layout(local_size_x = ${LOCAL_SIZE}) in;

${BUFFERS}
${HELPERS}
void main() {
    int q = int((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * ${LOCAL_SIZE}u + gl_LocalInvocationID.x);
    if (q >= ${QUADS}) {
        return;
    }
${BODY}
}
