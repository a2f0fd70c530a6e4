// Python bindings of convzoo's CPU kernels: one extension module for all of csrc/.
#include <torch/extension.h>

#include <vector>

at::Tensor sample_columns(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& mask,
                          std::vector<int64_t> kernel, std::vector<int64_t> stride, std::vector<int64_t> padding,
                          std::vector<int64_t> dilation, int64_t groups);
std::vector<at::Tensor> sample_columns_backward(const at::Tensor& gcols, const at::Tensor& x, const at::Tensor& offset,
                                                const at::Tensor& mask, std::vector<int64_t> kernel,
                                                std::vector<int64_t> stride, std::vector<int64_t> padding,
                                                std::vector<int64_t> dilation, int64_t groups, bool need_x,
                                                bool need_offset, bool need_mask);
at::Tensor grouped_wgrad(const at::Tensor& grad_out, const at::Tensor& x, std::vector<int64_t> kernel,
                         std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                         int64_t groups);
at::Tensor grouped_dgrad(const at::Tensor& grad_out, const at::Tensor& wf, std::vector<int64_t> input_size,
                         std::vector<int64_t> padding, int64_t dilation_h, int64_t groups);
at::Tensor grouped_forward(const at::Tensor& x, const at::Tensor& wt, std::vector<int64_t> padding, int64_t dilation_h,
                           int64_t groups);
at::Tensor group_sum(const at::Tensor& z, int64_t groups);
at::Tensor group_repeat(const at::Tensor& y, int64_t group_size);
at::Tensor transpose_last(const at::Tensor& x);
at::Tensor im2col(const at::Tensor& x, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                  std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups);
at::Tensor col2im(const at::Tensor& cols, std::vector<int64_t> size, std::vector<int64_t> kernel,
                  std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                  int64_t groups);
at::Tensor cat_channels_first(const std::vector<at::Tensor>& xs);
std::vector<at::Tensor> split_channels_last(const at::Tensor& y, std::vector<int64_t> sizes);
std::vector<at::Tensor> mix_kernels_backward(const at::Tensor& grad, const at::Tensor& pi, const at::Tensor& bank);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sample_columns", &sample_columns, "Deformable bilinear sampling into NHWC columns (CPU)");
  m.def("sample_columns_backward", &sample_columns_backward, "Backward of sample_columns (CPU)");
  m.def("grouped_wgrad", &grouped_wgrad,
        "Weight gradient of a grouped conv with few output channels per group, NHWC (CPU)");
  m.def("grouped_dgrad", &grouped_dgrad,
        "Input gradient of a grouped conv with few output channels per group, stride 1, NHWC (CPU)");
  m.def("grouped_forward", &grouped_forward,
        "Grouped conv with few outputs per group, stride 1, NHWC: depthwise products summed per group (CPU)");
  m.def("group_sum", &group_sum, "Sum over each group of contiguous channels, NHWC (CPU)");
  m.def("group_repeat", &group_repeat, "Each value repeated over its group's channels, NHWC (CPU)");
  m.def("mix_kernels_backward", &mix_kernels_backward,
        "Both gradients of a dynamic conv's pi @ bank in one pass (CPU)");
  m.def("transpose_last", &transpose_last, "Batched transpose (B, R, S) -> (B, S, R): layout changes (CPU)");
  m.def("cat_channels_first", &cat_channels_first,
        "Channels-last parts -> one concatenated channels-first tensor (CPU)");
  m.def("im2col", &im2col, "im2col of an NCHW tensor, as F.unfold (CPU)");
  m.def("col2im", &col2im, "col2im into an NCHW tensor, as F.fold (CPU)");
  m.def("split_channels_last", &split_channels_last, "Inverse of cat_channels_first (CPU)");
}
