#version 450
// ${NAME}: ${SIZE} elements; stores ${STORES}
layout(local_size_x = ${LOCAL_SIZE}) in;

${BUFFERS}
${HELPERS}
void main() {
    int i = int((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * ${LOCAL_SIZE}u + gl_LocalInvocationID.x);
    if (i >= ${SIZE}) {
        return;
    }
${BODY}
}
