// Every cuda kernel the tests launch, instantiated once: ptxas's resource
// report of this file is what scripts/check_cuda_resources.sh checks.
#include "attnkit/attention/flash_cuda.cuh"

namespace attnkit::test {

template <class T, class TO>
void instantiate_flash_cuda(const attention_args<const T, const T, const T, TO>& args, const cuda& backend) {
  flash_attention(args, backend);
}

template void instantiate_flash_cuda<half, half>(const attention_args<const half, const half, const half, half>&,
                                                 const cuda&);
template void instantiate_flash_cuda<half, float>(const attention_args<const half, const half, const half, float>&,
                                                  const cuda&);
template void instantiate_flash_cuda<bfloat16, float>(
    const attention_args<const bfloat16, const bfloat16, const bfloat16, float>&, const cuda&);
template void instantiate_flash_cuda<bfloat16, bfloat16>(
    const attention_args<const bfloat16, const bfloat16, const bfloat16, bfloat16>&, const cuda&);

}  // namespace attnkit::test
